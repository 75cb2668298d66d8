"""EdgeClient: the one object an app talks to.

recommend() answers from, in order: the server (only when recently reachable,
within the latency budget), the local int8 rerank of cached candidates with
the on-device user state, the cached list as the server ranked it, popular
items. Every answer says which. No network call happens unless the caller
asked for one: recommend() with the server allowed, sync() and flush().
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import cast

from pocketrank.shared.schemas import check_id, check_item_id, finite_number, validate_event

from . import sequence
from .cache import DeviceCache
from .errors import IntegrityError, StorageError, TransportError, ValidationError
from .local import LocalRecommender
from .outbox import Outbox
from .policy import Connectivity
from .rerank import LocalRanker, ModelSlot
from .results import FlushResult, Recommendation, RecommendedItem, SyncResult
from .steadyclock import SteadyClock, boottime, describe_offset
from .sync import Syncer
from .transport import Transport
from .trust import load_public_key
from .userstate import SearchIndex, fold

CONTEXT_KEYS = ("exclude", "max_per_category", "popular_penalty")


class EdgeClient:
    """The SDK. One per device database; safe to share between threads (writes are serialised).

    `token` is the device token from POST /v1/devices (sent as a Bearer
    header); servers that do not require one accept requests without it.

    Timeouts: `latency_budget` bounds the server's part of recommend(),
    `sync_timeout` each sync request and artifact download, `upload_timeout`
    each upload batch. Each bounds the whole call, not each network phase.

    `wifi_only`: model files (ranker, encoder) download only in a sync told
    `on_wifi=True`; candidate lists always. A version that needs a new model is
    left pending as a whole until then, and the held version keeps serving
    (docs/sync-protocol.md, "wifi_only").

    `clock` is the wall clock (event timestamps); `monotonic` the steady one the
    outbox ages events on (edge_runtime/steadyclock.py); tests inject both.
    """

    def __init__(
        self,
        db_path: Path | str,
        public_key: str | None,
        base_url: str = "http://127.0.0.1:8000",
        device_id: str = "device",
        latency_budget: float = 0.150,
        sync_timeout: float = 10.0,
        stale_after: float = 7 * 86400,
        max_model_bytes: int = 8 * 1024 * 1024,
        transport: Transport | None = None,
        connectivity: Connectivity | None = None,
        batch_size: int = 100,
        *,
        token: str | None = None,
        upload_timeout: float = 10.0,
        uploads: Connectivity | None = None,
        max_outbox_events: int = 10_000,
        max_outbox_bytes: int = 4 << 20,
        max_outbox_age_days: float = 30.0,
        max_per_category: int | None = None,
        drop_out_of_stock: bool = False,
        durability: str = "crash",
        wifi_only: bool = False,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = boottime,
    ):
        self.device_id = check_id("device_id", device_id)
        self.cache = DeviceCache(db_path, durability)
        self.public_key = load_public_key(public_key) if public_key else None
        auth = {"Authorization": f"Bearer {token}"} if token else None
        self.transport = transport or Transport(base_url, headers=auth)
        if transport is not None and auth and isinstance(transport, Transport):
            transport.client.headers.update(auth)
        self.latency_budget = latency_budget
        self.sync_timeout = sync_timeout
        self.upload_timeout = upload_timeout
        self.max_model_bytes = max_model_bytes
        self.wifi_only = wifi_only
        self.connectivity = connectivity or Connectivity()
        self.uploads = uploads or Connectivity()
        self.outbox = Outbox(self.cache, max_outbox_events, max_outbox_bytes, max_outbox_age_days, clock,
                             SteadyClock(clock, monotonic))
        self.batch_size = batch_size
        self.clock = clock
        self._sleep = sleep
        self.slot: ModelSlot[LocalRanker] = ModelSlot()
        self.search = SearchIndex(self.cache)
        self.local = LocalRecommender(self.cache, self.slot, max_model_bytes, stale_after, clock, max_per_category,
                                      drop_out_of_stock)
        self.session_id = uuid.uuid4().hex[:16]
        # One sync at a time per client: two threads syncing one database would race on its version (and
        # refuse each other's answers as rollbacks).
        self._sync_lock = threading.Lock()
        self._clock_offset: float | None = None  # the last measured, also when the storage refused to keep it
        # What each user was last shown (products by their own ids), so an event on one of those items can
        # say which path (server / edge / cache / popular) and which versions served it: monitoring per segment.
        self._served: dict[str, tuple[frozenset[str], dict[str, str]]] = {}
        # Files a crash left unreferenced (a sync that died before its commit).
        self.cache.files.gc(set(self.cache.artifact_shas().values()))

    @property
    def stale_after(self) -> float:
        return self.local.stale_after

    # --- events ---

    def track(self, user_id: str, type: str, item_id: str | int | None = None, query: str | None = None,
              timestamp: float | None = None, context: dict | None = None) -> str:
        """Record an event; it is in the outbox on disk before this returns, and the user's state has moved.

        `item_id` is the product's own id, as recommend() returned it (an integer is
        taken as its decimal digits). Purchases are fsynced (they survive power
        loss, not only the app being killed). Raises ValidationError for a bad
        event and StorageError if it could not be stored; then nothing was
        recorded. `context` (source, model_version, candidates_version, platform,
        connectivity, segment) is filled in from the last recommend() for this
        user when the item was in it.
        """
        if context is None and item_id is not None:
            try:
                key = check_item_id(item_id)
            except ValidationError:
                key = None  # validate_event below names the bad field, in its order of checks
            shown, served = self._served.get(str(user_id), (frozenset(), {}))
            context = served if key in shown else None
        event = validate_event({
            "event_id": uuid.uuid4().hex, "user_id": user_id, "device_id": self.device_id, "type": type,
            "timestamp": self.clock() if timestamp is None else timestamp, "session_id": self.session_id,
            **({"item_id": item_id} if item_id is not None else {}),
            **({"query": query} if query is not None else {}),
            **({"context": context} if context else {}),
        })
        snap = self.cache.snapshot()
        dim = snap.dim
        with self.cache.tx(durable=type == "purchase") as conn:
            self.outbox.add(event, conn)
            if (snap.manifest.get("model") or {}).get("kind") == "sequence":
                # The encoder reads the held history: the event is in it at once, offline too. (A fold bundle's
                # device keeps none: a sync that brings a sequence model fills it with the server's history
                # and the queued events.)
                sequence.append(conn, event.user_id, [(event.type, None, None if event.item_id is None
                                                       else str(event.item_id), event.timestamp)])
            if dim:  # before the first sync there is nothing to fold with; the sync refolds the outbox
                fold(conn, event.user_id, [event.to_dict()], dim, self.search.vector)
        return event.event_id

    def flush(self, wait: float = 0.0) -> FlushResult:
        """Upload queued events in batches; each is deleted only once the server acknowledged it.

        Honours the upload backoff (and any Retry-After): with `wait` = 0 it
        returns at once when backing off; otherwise it waits and retries for up
        to `wait` seconds. Always returns: every answered round must remove rows
        from the outbox (a round that removes none stops the flush), so the rows
        queued at the start bound the rounds. A damaged queued event is
        quarantined (result.quarantined), never sent, and the others go on.
        """
        result = FlushResult()
        quarantined = self.outbox.quarantined_now
        try:
            self.outbox.retry_removal()
        except StorageError as exc:
            result.error = _unremoved(len(self.outbox.unremoved), exc)
            result.remaining = self.outbox.count()
            return result
        clock = self.uploads.clock
        deadline = clock() + wait
        offset = None
        rounds = limit = self.outbox.count() + 32  # a row per answered round at least; the rest for 413 halvings
        while rounds > 0:
            rounds -= 1
            if not self.uploads.allow():
                delay = self.uploads.delay()
                if clock() + delay > deadline:
                    result.retry_in = delay
                    result.error = result.error or f"uploads back off for {delay:.1f} s more"
                    break
                self._sleep(delay)
            try:
                batch = self.outbox.next_batch(self.batch_size)
            except StorageError as exc:  # quarantining a damaged row needs a write
                result.error = str(exc)
                break
            if not batch:
                break
            sent_at = self.clock()
            try:
                # 422: some events were rejected; its results are handled like a 200's (the
                # rejected ones set aside, the rest acknowledged), never retried as a failure.
                answer = self.transport.post_json("/v1/events", {"events": batch.events}, timeout=self.upload_timeout,
                                                  headers={"Idempotency-Key": batch.key}, answers=(422,))
            except TransportError as exc:
                if getattr(exc, "status_code", None) == 413 and len(batch) > 1:
                    self.batch_size = max(1, len(batch) // 2)  # the server's body limit is lower than we assumed
                    continue
                result.error = str(exc)
                self.uploads.failure(getattr(exc, "retry_after", None), str(exc))
                continue
            server_time = _server_time(answer)
            if server_time is not None:
                offset = server_time - (sent_at + self.clock()) / 2
            results = answer.get("results") if isinstance(answer, dict) else None
            result.sent += len(batch)
            result.batches += 1
            held = len(self.outbox.unremoved)
            try:
                ack = self.outbox.acknowledge(results if isinstance(results, list) else [], batch.events,
                                              batch.rowids, server_time)
            except StorageError as exc:
                result.acknowledged += len(self.outbox.unremoved) - held  # the server has them all the same
                result.error = _unremoved(len(self.outbox.unremoved), exc)
                break
            result.acknowledged += ack.acknowledged
            result.rejected += ack.rejected
            result.redated += ack.redated
            if ack.acknowledged + ack.rejected + ack.redated == 0:
                result.error = "the server acknowledged none of the batch"
                self.uploads.failure(None, result.error)
                continue
            if ack.removed + ack.redated == 0:
                # Acknowledged, yet nothing left the outbox: the next round would send the same batch again.
                result.error = (f"the server acknowledged {ack.acknowledged + ack.rejected} events of the batch, but "
                                "none of them left the outbox; stopped instead of sending them again")
                break
            self.uploads.success()
        else:
            result.error = result.error or f"stopped after {limit} rounds (the events queued at the start, and 32 " \
                                            "more); flush again"
        if offset is not None:
            self._note_server_clock(offset)
        result.quarantined = self.outbox.quarantined_now - quarantined
        result.remaining = self.outbox.count()
        if result.remaining == 0:
            result.error = None
        return result

    def _note_server_clock(self, offset: float) -> None:
        """Keep the server's view of this device's clock (server minus device, seconds), for status() and for
        the messages that depend on the device's clock."""
        self._clock_offset = offset
        try:
            self.cache.set("server_clock", json.dumps({"offset": offset, "at": self.clock()}))
        except StorageError:
            pass  # kept in memory; the next flush tries to store it again

    @property
    def clock_offset(self) -> float | None:
        """The server's clock minus this device's, in seconds, as the last upload measured it; None before any."""
        return self._clock_offset if self._clock_offset is not None else self.cache.clock_offset()

    # --- sync ---

    def sync(self, users: list[str] | None = None, on_wifi: bool = False) -> SyncResult:
        """Pull the newest bundle for `users` (default: every user known on this device).

        Verified (signature, version, expiry, every sha256 and length) before
        anything is written; then applied in one SQLite transaction. On any
        error the device stays on its previous version. With `wifi_only`, pass
        `on_wifi=True` when the OS reports an unmetered network: only then is a
        new model downloaded (result.deferred says when a version waits for it).
        """
        users = sorted({check_id("users", u) for u in (users or self.cache.users())})
        if not users:
            raise ValidationError("users", "name at least one user to sync for")
        syncer = Syncer(self.cache, self.transport, self.public_key, self.slot, self.outbox, self.search,
                        self.sync_timeout, self.max_model_bytes, self.clock, sleep=self._sleep,
                        models_allowed=not self.wifi_only or on_wifi)
        try:
            with self._sync_lock:
                result = syncer.run(users)
        except TransportError as exc:
            self.connectivity.failure(getattr(exc, "retry_after", None), str(exc))
            raise
        self.connectivity.success()
        return result

    # --- recommendations ---

    def recommend(self, user_id: str, k: int = 10, context: dict | None = None,
                  allow_server: bool = True) -> Recommendation:
        """The user's top k, never blank while anything is cached; see Recommendation.source and .reason.

        context: {"exclude": [product ids not to show, e.g. the one on screen],
        "max_per_category": n, "popular_penalty": x}; the last two bind the device's own answers (offline, or
        the server unreachable) in place of the server's settings from the manifest. Every item is named by the
        product's own id.
        """
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 100:
            raise ValidationError("k", "must be an integer between 1 and 100")
        user_id = check_id("user_id", user_id)
        exclude, cap, tilt = _context(context)
        start = time.perf_counter()
        reason = "server not asked"
        if allow_server and self.connectivity.allow():
            try:
                rec = self._from_server(user_id, k, exclude)
                self.connectivity.success()
                return self._remember(user_id, _timed(rec, start))
            except (TransportError, IntegrityError) as exc:  # unreachable, or an answer that cannot be used
                self.connectivity.failure(getattr(exc, "retry_after", None), str(exc))
                reason = str(exc)
        elif allow_server:
            reason = f"server in backoff after recent failures (next try in {self.connectivity.delay():.1f} s)"
        rec = self.local.recommend(user_id, k, exclude, cap, tilt)
        rec.reason = reason
        return self._remember(user_id, _timed(rec, start))

    def _remember(self, user_id: str, rec: Recommendation) -> Recommendation:
        served = {"source": rec.source, "connectivity": "online" if rec.source == "server" else "offline"}
        if rec.model_version:
            served["model_version"] = str(rec.model_version)[:64]
        if rec.candidates_version is not None:
            served["candidates_version"] = str(rec.candidates_version)
        self._served[user_id] = (frozenset(rec.item_ids), served)
        return rec

    def _from_server(self, user_id: str, k: int, exclude: set[str]) -> Recommendation:
        _, body = self.transport.get_json("/v1/recommendations", timeout=self.latency_budget,
                                          params={"user_id": user_id, "k": min(100, k + len(exclude))})
        ranked, sent = _server_items(body)
        ranked = [(i, s) for i, s in ranked if i not in exclude][:k]
        # The held entry's metadata (signed) first; for an item the device holds no entry for (it holds only
        # its lists' items), the answer's own fields.
        meta = self.cache.products([i for i, _ in ranked])
        items = []
        for r, (i, s) in enumerate(ranked):
            m = meta.get(i) or sent[i]
            price, title, category = m.get("price"), m.get("title"), m.get("category")
            items.append(RecommendedItem(i, s, r + 1, title if isinstance(title, str) else "",
                                         category if isinstance(category, str) else "", "server",
                                         price=float(cast(float, price)) if _number(price) else None))
        model, version = body.get("model_version"), body.get("bundle_version")
        return Recommendation(items, "server", model if isinstance(model, str) else None,
                              version if isinstance(version, int) and not isinstance(version, bool) else None)

    # --- status ---

    def status(self) -> dict:
        snap = self.cache.snapshot()
        events, nbytes = self.outbox.totals()
        row = self.cache.query_one("SELECT COUNT(*) FROM rejected")
        assert row is not None  # COUNT(*) always returns one row
        rejected = row[0]
        offset = self.clock_offset
        return {
            "bundle_version": snap.version,
            "model_version": snap.model_version,
            "expires_at": snap.manifest.get("expires_at"),
            "synced_at": snap.synced_at,
            "schema_version": self.cache.schema_version,
            "outbox": events,
            "outbox_bytes": nbytes,
            "outbox_oldest_age": self.outbox.oldest_age(),
            "outbox_over_bounds": self.outbox.over_bounds(),
            "dropped": self.outbox.dropped,
            "dropped_by_reason": self.outbox.dropped_by_reason(),
            "rejected": rejected,
            "quarantined": self.outbox.quarantined(),
            "damaged": self.cache.damaged(),
            "clock_offset": offset,
            "clock_problem": describe_offset(offset),
            "storage_error": self.cache.last_storage_error,
            "connectivity": self.connectivity.state,
            "uploads": self.uploads.state,
            "uploads_retry_in": self.uploads.delay() or None,
            "ranker": {"sha256": snap.ranker_sha, "loaded": self.slot.sha == snap.ranker_sha and self.slot.model
                       is not None, "error": self.slot.error},
            "users": self.cache.users(),
        }

    def reset_backoff(self) -> None:
        """Call when the OS reports the network is back: the next call tries at once (Retry-After still holds)."""
        self.connectivity.reset()
        self.uploads.reset()

    def close(self) -> None:
        self.transport.close()
        self.cache.close()

    def __enter__(self) -> EdgeClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _context(context: dict | None) -> tuple[set[str], int | None, float | None]:
    if context is None:
        return set(), None, None
    if not isinstance(context, dict):
        raise ValidationError("context", "must be a dict")
    unknown = sorted(set(context) - set(CONTEXT_KEYS))
    if unknown:
        raise ValidationError("context", f"unknown key {unknown[0]!r}; known: {', '.join(CONTEXT_KEYS)}")
    exclude = context.get("exclude") or []
    if not isinstance(exclude, (list, tuple, set, frozenset)):
        raise ValidationError("context", "exclude must be a list of product ids")
    try:
        exclude = {check_item_id(i) for i in exclude}  # an integer is taken as its digits
    except ValidationError as exc:
        raise ValidationError("context", f"exclude must be a list of product ids: {exc.message}") from exc
    cap = context.get("max_per_category")
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
        raise ValidationError("context", "max_per_category must be a positive integer")
    tilt = context.get("popular_penalty")
    if tilt is not None and not ((x := finite_number(tilt)) is not None and x >= 0):
        raise ValidationError("context", "popular_penalty must be a number >= 0 (0: off)")
    return exclude, cap, tilt


def _number(value: object) -> bool:
    return finite_number(value) is not None


def _server_items(body: object) -> tuple[list[tuple[str, float]], dict[str, dict]]:
    """([(product id, score)] in the server's order, {product id: its fields}) of a /v1/recommendations answer,
    or TransportError for anything else: recommend() then answers from the device, whatever the server sent."""
    items = body.get("items") if isinstance(body, dict) else None
    if not isinstance(items, list) or len(items) > 1000:
        raise TransportError("GET /v1/recommendations answered a malformed body: no list of items")
    ranked, sent = [], {}
    for it in items:
        try:
            # The products' own ids, as the server names them (an integer is taken as its digits).
            item_id = check_item_id(it.get("item_id")) if isinstance(it, dict) else None
        except ValidationError as exc:
            raise TransportError(f"GET /v1/recommendations answered a malformed item id: {exc}") from exc
        score = it.get("score") if isinstance(it, dict) else None
        if item_id is None or not _number(score):
            raise TransportError(f"GET /v1/recommendations answered a malformed item: {str(it)[:100]!r}")
        ranked.append((item_id, float(score)))  # type: ignore[arg-type]  # _number checked it
        sent[item_id] = it
    return ranked, sent


def _server_time(answer: object) -> float | None:
    """The server's clock from an upload answer (`server_time`, unix seconds), if it sent a plausible one."""
    value = finite_number(answer.get("server_time") if isinstance(answer, dict) else None)
    return value if value is not None and value > 0 else None


def _unremoved(n: int, exc: StorageError) -> str:
    return (f"the server has the {n} events it acknowledged, but the device could not remove them from its outbox "
            f"({exc}); they stay queued, this client does not send them again and retries removing them at the "
            "next flush (after a restart they are sent again, and the server counts them once)")


def _timed(rec: Recommendation, start: float) -> Recommendation:
    rec.latency_ms = (time.perf_counter() - start) * 1000
    return rec
