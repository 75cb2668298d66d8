"""EdgeClient: the one object an app talks to.

recommend() answers from, in order: the server (only when recently reachable,
within the latency budget), the local int8 rerank of cached candidates with
the on-device user state, the cached list as the server ranked it, popular
items. Every answer says which. No network call happens unless the caller
asked for one (recommend with the server allowed, sync, flush).
"""

from __future__ import annotations

import base64
import binascii
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shared.errors import IntegrityError, ModelError, TransportError, ValidationError
from shared.features import UserState, query_vector, update_user_state, user_vector
from shared.rules import apply_rules, top_by_score
from shared.schemas import validate_event
from shared import wire

from .cache import DeviceCache
from .outbox import Outbox
from .policy import Connectivity
from .rerank import LocalRanker
from .transport import Transport
from .trust import load_public_key, verify_manifest

CONSUMED_TYPES = ("click", "add_to_cart", "purchase")


@dataclass
class RecommendedItem:
    item_id: int
    score: float
    rank: int
    title: str = ""
    category: str = ""


@dataclass
class Recommendation:
    items: list[RecommendedItem]
    source: str  # server | edge | cache | popular
    model_version: str | None = None
    candidates_version: int | None = None
    stale: bool = False
    latency_ms: float = 0.0
    reason: str = ""  # why the server was not used, when it was not

    @property
    def item_ids(self) -> list[int]:
        return [i.item_id for i in self.items]


@dataclass
class SyncResult:
    version: int
    changed: bool
    bytes_downloaded: int = 0
    artifacts_fetched: list[str] = field(default_factory=list)


@dataclass
class FlushResult:
    sent: int = 0
    acknowledged: int = 0
    rejected: int = 0
    remaining: int = 0
    error: str | None = None


class EdgeClient:
    def __init__(
        self,
        db_path: Path | str,
        public_key: str,
        base_url: str = "http://127.0.0.1:8000",
        device_id: str = "device",
        latency_budget: float = 0.150,
        sync_timeout: float = 10.0,
        stale_after: float = 7 * 86400,
        max_model_bytes: int = 8 * 1024 * 1024,
        transport: Transport | None = None,
        connectivity: Connectivity | None = None,
        batch_size: int = 100,
    ):
        self.cache = DeviceCache(db_path)
        self.public_key = load_public_key(public_key)
        self.transport = transport or Transport(base_url)
        self.device_id = device_id
        self.latency_budget = latency_budget
        self.sync_timeout = sync_timeout
        self.stale_after = stale_after
        self.max_model_bytes = max_model_bytes
        self.connectivity = connectivity or Connectivity()
        self.outbox = Outbox(self.cache)
        self.batch_size = batch_size
        self._ranker: LocalRanker | None = None
        self._ranker_sha: str | None = None
        self.session_id = uuid.uuid4().hex[:16]

    # --- events ---

    def track(self, user_id: str, type: str, item_id: int | None = None, query: str | None = None,
              timestamp: float | None = None) -> str:
        """Record an event: durable in the outbox before this returns; updates the on-device state."""
        event = validate_event({
            "event_id": uuid.uuid4().hex, "user_id": user_id, "device_id": self.device_id, "type": type,
            "timestamp": time.time() if timestamp is None else timestamp, "session_id": self.session_id,
            **({"item_id": item_id} if item_id is not None else {}),
            **({"query": query} if query is not None else {}),
        })
        self.outbox.add(event)
        self._fold(user_id, [event.to_dict()])
        return event.event_id

    def _fold(self, user_id: str, events: list[dict], base: UserState | None = None) -> None:
        dim = self._dim()
        if dim is None:
            return  # nothing synced yet: the server folds these once they upload
        state = base or self.cache.user_state(user_id, dim) or UserState.empty(dim)
        titles: dict[int, str] | None = None
        for ev in events:
            vec = self.cache.vector(ev["item_id"]) if ev.get("item_id") is not None else None
            if vec is None and ev.get("query"):
                titles = titles if titles is not None else self.cache.titles()
                ids, vecs = self.cache.vectors(list(titles))
                vec = query_vector(ev["query"], titles, dict(zip(ids.tolist(), vecs)))
            state = update_user_state(state, vec, ev["type"])
            if ev["type"] in CONSUMED_TYPES and ev.get("item_id") is not None:
                self.cache.db["consumed"].upsert(
                    {"user_id": user_id, "item_id": ev["item_id"], "type": ev["type"]}, pk=("user_id", "item_id"))
        self.cache.put_state(user_id, state)

    def flush(self) -> FlushResult:
        """Upload queued events in batches; each is deleted only once the server acknowledged it."""
        result = FlushResult()
        while True:
            batch = self.outbox.batch(self.batch_size)
            if not batch:
                break
            try:
                answer = self.transport.post_json("/v1/events", {"events": batch}, timeout=self.sync_timeout)
            except TransportError as exc:
                self.connectivity.failure(getattr(exc, "retry_after", None))
                result.error = str(exc)
                break
            self.connectivity.success()
            acked, rejected = self.outbox.acknowledge(answer.get("results", []), batch)
            result.sent += len(batch)
            result.acknowledged += acked
            result.rejected += rejected
            if acked + rejected == 0:
                result.error = "server acknowledged none of the batch"
                break
        result.remaining = self.outbox.count()
        return result

    # --- sync ---

    def sync(self, users: list[str] | None = None) -> SyncResult:
        """Pull the newest bundle for `users` (default: every user known on this device).

        Verified (signature, version, expiry, every sha256 and length) before
        anything is written; then applied in one SQLite transaction.
        """
        users = sorted(set(users or self.cache.users()))
        if not users:
            raise ValidationError("users", "name at least one user to sync for")
        held = self.cache.version
        etag = f'"v{held}"' if held else None
        try:
            status, body = self.transport.get_json(
                "/v1/sync", timeout=self.sync_timeout, params={"cursor": held, "users": ",".join(users)},
                headers={"If-None-Match": etag} if etag else None)
        except TransportError as exc:
            self.connectivity.failure(getattr(exc, "retry_after", None))
            raise
        self.connectivity.success()
        if status == 304:
            return SyncResult(held, False)
        try:
            manifest_bytes = base64.b64decode(body["manifest"], validate=True)
        except (KeyError, TypeError, binascii.Error) as exc:
            raise IntegrityError("sync answer has no readable manifest") from exc
        manifest = verify_manifest(manifest_bytes, body.get("signature", ""), self.public_key, held)

        fetched, downloaded, parts = [], 0, {}
        for name, art in manifest["artifacts"].items():
            have = self.cache.artifact(name)
            if have and have[0] == art["sha256"]:
                parts[name] = have[1]
                continue
            data = self._download(body["artifacts"][name], art)
            parts[name] = data
            fetched.append(name)
            downloaded += len(data)
        index = wire.unpack_user_index(parts["users"])
        records = {}
        for uid, b64 in (body.get("records") or {}).items():
            blob = base64.b64decode(b64)
            if uid not in index:
                raise IntegrityError(f"record for user {uid!r} is not in the signed user index")
            wire.check_digest(blob, index[uid], len(blob), f"candidates of user {uid}")
            wire.unpack_candidates(blob)  # decodes, or raises IntegrityError
            records[uid] = blob
        states = {uid: wire.unpack_state(base64.b64decode(b64)) for uid, b64 in (body.get("states") or {}).items()}
        ids, vecs = wire.unpack_vectors(parts["items"])
        catalog = wire.unpack_json(parts["catalog"])
        LocalRanker(parts["ranker"], self.max_model_bytes)  # refuse a bad model before applying anything
        self._apply(manifest, manifest_bytes, parts, records, states, ids, vecs, catalog)
        return SyncResult(manifest["version"], True, downloaded + len(json.dumps(body)), fetched)

    def _download(self, url: str, art: dict) -> bytes:
        """Fetch an artifact, resuming from a stored partial; check its length and sha256."""
        sha, length = art["sha256"], art["length"]
        row = self.cache.db.execute("SELECT blob FROM partials WHERE sha256 = ?", [sha]).fetchone()
        have = row[0] if row else b""
        data, ranged = self.transport.get_bytes(url, timeout=self.sync_timeout, start=len(have))
        data = have + data if ranged else data
        if len(data) < length:
            self.cache.db["partials"].upsert({"sha256": sha, "blob": data}, pk="sha256")
            raise TransportError(f"{url}: got {len(data)} of {length} bytes; sync again to resume")
        self.cache.db.execute("DELETE FROM partials WHERE sha256 = ?", [sha])
        self.cache.db.conn.commit()
        wire.check_digest(data, sha, length, url)
        return data

    def _apply(self, manifest, manifest_bytes, parts, records, states, ids, vecs, catalog) -> None:
        db = self.cache.db
        now = time.time()
        meta = {it["item_id"]: it for it in catalog["items"]}
        with db.conn:  # one transaction: all of this version or none of it
            db.conn.execute("DELETE FROM items")
            db.conn.executemany(
                "INSERT INTO items (item_id, vector, title, category, price, in_stock) VALUES (?, ?, ?, ?, ?, ?)",
                [(int(i), v.astype("<f4").tobytes(), meta.get(int(i), {}).get("title", ""),
                  meta.get(int(i), {}).get("category", ""), float(meta.get(int(i), {}).get("price", 0.0)),
                  int(meta.get(int(i), {}).get("in_stock", True))) for i, v in zip(ids, vecs)])
            for name, data in parts.items():
                db.conn.execute("INSERT OR REPLACE INTO artifacts (name, sha256, blob) VALUES (?, ?, ?)",
                                (name, manifest["artifacts"][name]["sha256"], data))
            for uid, blob in records.items():
                db.conn.execute("INSERT OR REPLACE INTO candidates (user_id, blob, version, received_at) "
                                "VALUES (?, ?, ?, ?)", (uid, blob, manifest["version"], now))
            for key, value in (("bundle_version", str(manifest["version"])),
                               ("manifest", manifest_bytes.decode()),
                               ("popular", json.dumps(catalog.get("popular", []))),
                               ("synced_at", str(now))):
                db.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))
        # The live state from the server holds every event it acknowledged;
        # events still in the outbox are folded again on top of it.
        for uid, state in states.items():
            self._fold(uid, self.outbox.pending_for(uid), base=state)

    # --- recommendations ---

    def recommend(self, user_id: str, k: int = 10, context: dict | None = None,
                  allow_server: bool = True) -> Recommendation:
        if not isinstance(k, int) or not 1 <= k <= 100:
            raise ValidationError("k", "must be an integer between 1 and 100")
        start = time.perf_counter()
        reason = "server not asked" if not allow_server else ""
        if allow_server and self.connectivity.allow():
            try:
                _, body = self.transport.get_json("/v1/recommendations", timeout=self.latency_budget,
                                                  params={"user_id": user_id, "k": k})
                self.connectivity.success()
                items = [RecommendedItem(int(i["item_id"]), float(i["score"]), int(i["rank"]))
                         for i in body["items"]]
                return self._finish(Recommendation(items, "server", body.get("model_version"),
                                                   body.get("bundle_version")), start)
            except TransportError as exc:
                self.connectivity.failure(getattr(exc, "retry_after", None))
                reason = str(exc)
        elif allow_server:
            reason = "server in backoff after recent failures"
        rec = self._local(user_id, k)
        rec.reason = reason
        return self._finish(rec, start)

    def _local(self, user_id: str, k: int) -> Recommendation:
        manifest = self.cache.manifest() or {}
        model_version = manifest.get("model_version")
        consumed = self.cache.consumed(user_id)
        cached = self.cache.candidates(user_id)
        if cached is not None:
            blob, version, received_at = cached
            ids, scores, _ = wire.unpack_candidates(blob)
            stale = time.time() - received_at > self.stale_after
            ranker = self._local_ranker()
            dim = self._dim()
            state = self.cache.user_state(user_id, dim) if dim else None
            if ranker is not None and state is not None and state.w > 0:
                found, vecs = self.cache.vectors(ids.tolist())
                ranked = top_by_score(found, ranker.score(user_vector(state), vecs))
                return Recommendation(self._items(apply_rules(ranked, k, consumed)), "edge", model_version,
                                      version, stale)
            ranked = list(zip(ids.tolist(), scores.tolist()))
            return Recommendation(self._items(apply_rules(ranked, k, consumed)), "cache", model_version,
                                  version, stale)
        popular = [(i, 0.0) for i in self.cache.popular()]
        return Recommendation(self._items(apply_rules(popular, k, consumed)), "popular", model_version,
                              self.cache.version or None)

    def _local_ranker(self) -> LocalRanker | None:
        art = self.cache.artifact("ranker")
        if art is None:
            return None
        if self._ranker is None or self._ranker_sha != art[0]:
            try:
                self._ranker, self._ranker_sha = LocalRanker(art[1], self.max_model_bytes), art[0]
            except ModelError:
                return None
        return self._ranker

    def _dim(self) -> int | None:
        manifest = self.cache.manifest()
        return int(manifest["embedding_dim"]) if manifest else None

    def _items(self, ranked: list[tuple[int, float]]) -> list[RecommendedItem]:
        meta = self.cache.item_meta([i for i, _ in ranked])
        return [RecommendedItem(i, float(s), r + 1, meta.get(i, {}).get("title", ""),
                                meta.get(i, {}).get("category", "")) for r, (i, s) in enumerate(ranked)]

    def _finish(self, rec: Recommendation, start: float) -> Recommendation:
        rec.latency_ms = (time.perf_counter() - start) * 1000
        if rec.source == "server":
            rec.items = self._items([(i.item_id, i.score) for i in rec.items])
        return rec

    # --- status ---

    def status(self) -> dict:
        manifest = self.cache.manifest() or {}
        return {
            "bundle_version": self.cache.version,
            "model_version": manifest.get("model_version"),
            "expires_at": manifest.get("expires_at"),
            "synced_at": float(self.cache.get("synced_at", "0")) or None,
            "outbox": self.outbox.count(),
            "dropped": dict(self.outbox.dropped),
            "rejected": self.cache.db.execute("SELECT COUNT(*) FROM rejected").fetchone()[0],
            "connectivity": self.connectivity.state,
            "users": self.cache.users(),
        }

    def close(self) -> None:
        self.transport.close()
        self.cache.db.close()
