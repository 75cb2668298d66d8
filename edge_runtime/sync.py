"""Pulling a bundle: fetch, verify everything, then apply it in one SQLite transaction.

Nothing is written to the database until every byte is verified (signature,
rollback, expiry, each artifact's length and sha256, each user's record
against the signed user index) and the new ranker has loaded. Then the item
table, the artifact pointers, the users' records and packed rows, the live
user states (with the outbox's pending events folded on top) and the version
are written in one transaction: an interrupted sync leaves the device wholly on
its previous version. See edge_runtime/artifacts.py for the model files.

Users added after the held version was fetched: the server answers 304 for the
held version whatever the users, so their records are asked for with cursor=0.
The answer then carries the held version again; it is accepted, for records
and states only, when its manifest is byte for byte the held, signed one.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from typing import Callable

from shared import wire
from shared.features import DECAY, TYPE_WEIGHTS, UserState

from .cache import DeviceCache
from .errors import IntegrityError, SignatureError, TransportError
from .outbox import Outbox
from .packed import ItemTable, repack
from .rerank import LocalRanker, ModelSlot
from .results import SyncResult
from .transport import Transport
from .trust import verify_manifest
from .userstate import SearchIndex, fold

REQUIRED_ARTIFACTS = ("items", "catalog", "users", "ranker")


class Syncer:
    def __init__(self, cache: DeviceCache, transport: Transport, public_key, slot: ModelSlot, outbox: Outbox,
                 search: SearchIndex, timeout: float, max_model_bytes: int, clock: Callable[[], float] = time.time,
                 users_per_request: int = 50, sleep: Callable[[float], None] = time.sleep):
        self.cache, self.transport, self.public_key = cache, transport, public_key
        self.slot, self.outbox, self.search = slot, outbox, search
        self.timeout, self.max_model_bytes, self.clock = timeout, max_model_bytes, clock
        self.users_per_request = users_per_request
        self.sleep = sleep

    def run(self, users: list[str]) -> SyncResult:
        if self.public_key is None:
            raise SignatureError("no public key configured: pass the server's keys/signing.pub to EdgeClient")
        held = self.cache.version
        result = SyncResult(held, False)
        answer = self._request(users[: self.users_per_request], cursor=held)
        if answer is not None:
            self._apply(answer, result, same_version_ok=False)
        # Each round either gives the chunk its records or marks its users unknown
        # at this version; a newer version arriving mid-way starts the rounds over.
        for _ in range(4 * (len(users) // self.users_per_request + 1)):
            lagging = self._lagging(users)
            if not lagging:
                break
            answer = self._request(lagging[: self.users_per_request], cursor=0)
            if answer is None:
                break
            self._apply(answer, result, same_version_ok=True)
        return result

    def _request(self, users: list[str], cursor: int) -> dict | None:
        headers = {"If-None-Match": f'"v{cursor}"'} if cursor else None
        for attempt in range(3):
            try:
                status, body = self.transport.get_json("/v1/sync", timeout=self.timeout, headers=headers,
                                                       params={"cursor": cursor, "users": ",".join(users)})
                break
            except TransportError as exc:
                # A rate limit of a second or two is waited out here, so a
                # many-user sync is not failed half-way by its own request rate.
                wait = getattr(exc, "retry_after", None)
                if getattr(exc, "status_code", None) not in (429, 503) or wait is None or wait > 2.0 or attempt == 2:
                    raise
                self.sleep(wait)
        if status == 304:
            return None
        if not isinstance(body, dict):
            raise IntegrityError("sync answer is not a JSON object")
        return body

    def _lagging(self, users: list[str]) -> list[str]:
        held = self.cache.version
        done = {r[0] for r in self.cache.query("SELECT user_id FROM candidates WHERE version >= ? UNION "
                                               "SELECT user_id FROM unknown_users WHERE version >= ?", (held, held))}
        return [u for u in users if u not in done]

    # --- verify ---

    def _verify_manifest(self, body: dict, same_version_ok: bool) -> tuple[bytes, dict, bool]:
        try:
            manifest_bytes = base64.b64decode(body["manifest"], validate=True)
        except (KeyError, TypeError, binascii.Error) as exc:
            raise IntegrityError("sync answer has no readable manifest") from exc
        held = self.cache.version
        same = same_version_ok and held > 0 and manifest_bytes == (self.cache.get("manifest") or "").encode()
        manifest = verify_manifest(manifest_bytes, body.get("signature", ""), self.public_key,
                                   held - 1 if same else held, now=self.clock())
        missing = [n for n in REQUIRED_ARTIFACTS if n not in manifest["artifacts"]]
        if missing:
            raise IntegrityError(f"bundle {manifest['version']} lacks artifacts {missing}; the server must republish")
        folds = manifest.get("user_state") or {}
        if folds.get("decay") != DECAY or folds.get("type_weights") != dict(TYPE_WEIGHTS):
            raise IntegrityError(f"bundle {manifest['version']} folds user state with {folds}, this SDK with "
                                 f"decay {DECAY} and {dict(TYPE_WEIGHTS)}: update the app")
        if not isinstance(manifest.get("embedding_dim"), int) or manifest["embedding_dim"] <= 0:
            raise IntegrityError("manifest embedding_dim must be a positive integer")
        return manifest_bytes, manifest, same

    def _carried(self, body: dict, index: dict[str, str], records: dict[str, bytes]) -> list[str]:
        """Users whose held record the server says is unchanged, and whose bytes match the new signed index.

        A held record that does not match stays on its old version, so the
        next round asks for it in full: a wrong "unchanged" costs a request,
        never a wrong list.
        """
        out = []
        for uid in body.get("unchanged") or []:
            if not isinstance(uid, str) or uid in records or uid not in index:
                continue
            row = self.cache.query_one("SELECT blob FROM candidates WHERE user_id = ?", (uid,))
            if row is not None and wire.sha256_hex(row[0]) == index[uid]:
                out.append(uid)
        return out

    def _records(self, body: dict, index: dict[str, str]) -> dict[str, bytes]:
        records = {}
        for uid, b64 in (body.get("records") or {}).items():
            try:
                blob = base64.b64decode(b64, validate=True)
            except (TypeError, binascii.Error) as exc:
                raise IntegrityError(f"record of user {uid!r} is not base64") from exc
            if uid not in index:
                raise IntegrityError(f"record for user {uid!r} is not in the signed user index")
            wire.check_digest(blob, index[uid], len(blob), f"candidates of user {uid}")
            wire.unpack_candidates(blob)  # decodes, or raises IntegrityError
            records[uid] = blob
        return records

    def _states(self, body: dict, dim: int) -> dict[str, UserState]:
        states = {}
        for uid, b64 in (body.get("states") or {}).items():
            try:
                state = wire.unpack_state(base64.b64decode(b64, validate=True))
            except (TypeError, binascii.Error) as exc:
                raise IntegrityError(f"live state of user {uid!r} is not base64") from exc
            if len(state.s) != dim:
                raise IntegrityError(f"live state of user {uid!r} has dim {len(state.s)}, the bundle {dim}")
            states[uid] = state
        return states

    # --- download ---

    def _artifact(self, name: str, art: dict, urls: dict, result: SyncResult) -> bytes:
        """The artifact's verified bytes: from a held file if one matches, else downloaded (resuming)."""
        sha, length = art["sha256"], art["length"]
        files = self.cache.files
        if files.has(sha, length):
            try:
                return files.read(sha)
            except IntegrityError:
                pass  # damaged on disk: fetch it again
        url = urls.get(name) if isinstance(urls, dict) else None
        if not isinstance(url, str):
            raise IntegrityError(f"sync answer gives no URL for artifact {name!r}")
        have = files.partial(sha)
        if len(have) >= length:
            have = b""
        try:
            data, ranged = self.transport.get_bytes(url, timeout=self.timeout, start=len(have))
        except TransportError as exc:
            if getattr(exc, "status_code", None) == 416:
                files.drop_partial(sha)
            partial = getattr(exc, "partial", b"")
            if partial:
                files.save_partial(sha, have + partial if getattr(exc, "ranged", False) else partial)
                raise TransportError(f"{url}: interrupted ({exc}); sync again to resume") from exc
            raise
        data = have + data if ranged else data
        if len(data) < length:
            files.save_partial(sha, data)
            raise TransportError(f"{url}: got {len(data)} of {length} bytes; sync again to resume")
        files.drop_partial(sha)
        wire.check_digest(data, sha, length, url)
        files.put(sha, data)
        result.artifacts_fetched.append(name)
        result.bytes_downloaded += len(data)
        return data

    # --- apply ---

    def _apply(self, body: dict, result: SyncResult, same_version_ok: bool) -> None:
        manifest_bytes, manifest, same = self._verify_manifest(body, same_version_ok)
        version, dim = manifest["version"], manifest["embedding_dim"]
        arts = manifest["artifacts"]
        held_shas = self.cache.artifact_shas()
        parts: dict[str, bytes] = {}
        if not same:
            for name, art in arts.items():
                if not isinstance(art, dict) or not isinstance(art.get("length"), int):
                    raise IntegrityError(f"manifest artifact {name!r} is malformed")
                parts[name] = self._artifact(name, art, body.get("artifacts"), result)
        users_blob = parts.get("users") or self.cache.files.read(arts["users"]["sha256"])
        index = wire.unpack_user_index(users_blob)
        records = self._records(body, index)
        carried = self._carried(body, index, records)
        states = self._states(body, dim)
        rebuild = not same and (arts["items"]["sha256"] != held_shas.get("items")
                                or arts["catalog"]["sha256"] != held_shas.get("catalog"))
        table = catalog = None
        if rebuild:
            ids, vecs = wire.unpack_vectors(parts["items"])
            if len(ids) and vecs.shape[1] != dim:
                raise IntegrityError(f"item vectors have dim {vecs.shape[1]}, the manifest says {dim}")
            catalog = wire.unpack_json(parts["catalog"])
            if not isinstance(catalog, dict) or not isinstance(catalog.get("items"), list):
                raise IntegrityError("catalog must be an object with an items list")
        ranker = None
        if not same and arts["ranker"]["sha256"] != self.slot.sha:
            # Refuse a bad model before anything is applied; the one in use stays.
            ranker = LocalRanker(parts["ranker"], self.max_model_bytes)

        now = self.clock()
        superseded = set(held_shas.values()) - {a["sha256"] for a in arts.values()}
        with self.cache.tx(large=True) as conn:
            if rebuild:
                meta = {it.get("item_id"): it for it in catalog["items"] if isinstance(it, dict)}
                conn.execute("DELETE FROM items")
                conn.executemany(
                    "INSERT INTO items (item_id, vector, title, category, price, in_stock) VALUES (?, ?, ?, ?, ?, ?)",
                    [(int(i), v.astype("<f4").tobytes(), str(meta.get(int(i), {}).get("title", "")),
                      str(meta.get(int(i), {}).get("category", "")), float(meta.get(int(i), {}).get("price", 0.0)),
                      int(bool(meta.get(int(i), {}).get("in_stock", True)))) for i, v in zip(ids, vecs)])
                table = ItemTable.load(conn)
                conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('popular', ?)",
                             (json.dumps([int(i) for i in catalog.get("popular", [])]),))
            if not same:
                conn.execute("DELETE FROM artifacts")
                conn.executemany("INSERT INTO artifacts (name, sha256, length) VALUES (?, ?, ?)",
                                 [(n, a["sha256"], a["length"]) for n, a in arts.items()])
                for key, value in (("bundle_version", str(version)), ("manifest", manifest_bytes.decode())):
                    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('synced_at', ?)", (str(now),))
            conn.executemany("INSERT OR REPLACE INTO candidates (user_id, blob, version, received_at) "
                             "VALUES (?, ?, ?, ?)", [(u, b, version, now) for u, b in records.items()])
            unknown = [u for u in body.get("unknown_users") or [] if isinstance(u, str) and u not in records]
            conn.executemany("INSERT OR REPLACE INTO unknown_users (user_id, version) VALUES (?, ?)",
                             [(u, version) for u in unknown])
            conn.executemany("DELETE FROM unknown_users WHERE user_id = ?", [(u,) for u in records])
            # Confirmed current by the new signed index: as fresh as a re-sent record.
            conn.executemany("UPDATE candidates SET version = ?, received_at = ? WHERE user_id = ?",
                             [(version, now, u) for u in carried])
            repack(conn, None if rebuild else sorted(records), table)
            # The live state holds every event the server acknowledged; events
            # still in the outbox are folded again on top of it.
            for uid, state in states.items():
                fold(conn, uid, self.outbox.pending_for(uid, conn), dim, self.search.vector, base=state)
        self.cache.invalidate()
        if ranker is not None:
            self.slot.put(arts["ranker"]["sha256"], ranker)
        for sha in superseded:  # only now: the previous version is no longer referenced
            self.cache.files.path(sha).unlink(missing_ok=True)
        result.version, result.changed = version, True
        result.users_updated += sorted(records)
        result.users_unchanged += sorted(carried)
        result.unknown_users += unknown
        result.bytes_downloaded += len(json.dumps(body))
