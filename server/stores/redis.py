"""The scale-out store: Redis hashes for vectors and records, a Stream with a consumer group for the log.

Server workers on many machines share it; they are stateless. Durability is
Redis's: run it with `appendonly yes` and `appendfsync always` (as .ci/run and
the tests do), so an event is fsynced to the AOF before the reply that
acknowledges it. Event ids are deduplicated by a key per id with a TTL longer
than a device keeps an event in its outbox (30 days), so the set stays bounded.

One updater consumes the stream at a time (a lock key); its position is the
consumer group's, and entries delivered but not acknowledged before a crash
are delivered again first. Records carry the position of the last event
folded, so a redelivered event is never applied twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from typing import Any, cast

import numpy as np

from pocketrank.shared.errors import PocketrankError
from pocketrank.shared.features import UserState
from pocketrank.shared.schemas import Event, Item

from .base import (
    RECORDS_EPOCH,
    LogEntry,
    RecordRow,
    Store,
    Updates,
    UserContext,
    UserRecord,
    log_batches,
    pack_recent,
    unpack_recent,
)

log = logging.getLogger(__name__)

GROUP = b"updater"
CONSUMER = b"updater"
_SEQ_BITS = 20  # stream ids are "ms-seq"; positions pack them into one int

# Each event id's dedupe key holds the sha1 of the event's payload, so a reused id with other
# content can be told from a retry (conflicting). Keys written before hold '1': not comparable.
_APPEND = """
local out = {}
for i = 2, #KEYS do
  if redis.call('SET', KEYS[i], redis.sha1hex(ARGV[i]), 'NX', 'EX', ARGV[1]) then
    redis.call('XADD', KEYS[1], '*', 'e', ARGV[i])
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
# A crashed updater's lock expires after this long; a live one extends it every step.
LOCK_TTL_MS = 5_000


def pos_of(stream_id: bytes | str) -> int:
    sid = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    ms, seq = sid.split("-")
    return (int(ms) << _SEQ_BITS) | int(seq)


def id_of(pos: int) -> str:
    return f"{pos >> _SEQ_BITS}-{pos & ((1 << _SEQ_BITS) - 1)}"


def _payload(e: Event) -> str:
    d = {"id": e.event_id, "u": e.user_id, "d": e.device_id, "t": e.type, "ts": e.timestamp, "i": e.item_id,
         "q": e.query, "s": e.session_id}
    if e.context:
        d["c"] = dict(e.context)
    return json.dumps(d, separators=(",", ":"))


def _entry(stream_id: bytes, fields: dict) -> LogEntry:
    d = json.loads(fields[b"e"])
    ctx = tuple(sorted(d["c"].items())) if "c" in d else ()
    return LogEntry(pos_of(stream_id), Event(d["id"], d["u"], d["d"], d["t"], d["ts"], d["i"], d["q"], d["s"], ctx))


def _item_json(it: Item, provisional: bool) -> str:
    d = {**asdict(it), "sku": it.external_id, "attributes": dict(it.attributes), "provisional": provisional}
    return json.dumps(d, separators=(",", ":"))


def _item(raw: bytes) -> Item:
    d = json.loads(raw)
    return Item(d["item_id"], d["title"], d["category"], d["year"], d["price"], d["in_stock"], tuple(d["categories"]),
                d.get("sku") or "", d.get("currency") or "", tuple(sorted((d.get("attributes") or {}).items())),
                d.get("created_at"))


# Product id -> index: an id keeps the index it was first given; new ones take the next of a counter
# that explicit indexes push forward, so an index is never handed out twice.
_ASSIGN = """
local out = {}
for i, sku in ipairs(ARGV) do
  local idx = redis.call('HGET', KEYS[1], sku)
  if not idx then
    idx = redis.call('INCR', KEYS[2])
    redis.call('HSET', KEYS[1], sku, idx)
  end
  out[i] = tonumber(idx)
end
return out
"""
_RAISE = """
local c = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > c then redis.call('SET', KEYS[1], ARGV[1]) end
return 0
"""


_RECORD_FIELDS = (b"s", b"w", b"n", b"t", b"pos", b"r")


def _record(values: list, dim: int) -> UserRecord:
    s, w, n, t, pos, recent = values
    if s is None:
        return UserRecord.empty(dim)
    return UserRecord(UserState(np.frombuffer(s, dtype="<f4").astype(np.float32), float(w), int(n)),
                      int(pos), unpack_recent(recent), float(t))


def _record_mapping(r: UserRecord) -> dict:
    return {b"s": np.asarray(r.state.s, dtype="<f4").tobytes(), b"w": repr(float(r.state.w)),
            b"n": int(r.state.n_events), b"t": repr(r.updated_at), b"pos": int(r.last_pos),
            b"r": pack_recent(r.recent)}


class RedisStore(Store):
    backend = "redis"

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", prefix: str = "pocketrank:",
                 dedupe_ttl_days: float = 35.0):
        import redis

        self.url, self.prefix = url, prefix
        self.r = self._connect(url)
        self.dedupe_ttl = int(dedupe_ttl_days * 86400)
        try:
            self.r.ping()
        except redis.RedisError as exc:
            raise PocketrankError(f"cannot reach Redis at {url}: {exc}; start redis-server or set "
                                  "POCKETRANK_STORE=sqlite") from exc
        self._session = threading.local()
        self._append = self.r.register_script(_APPEND)
        self._release = self.r.register_script(_RELEASE)
        self._extend = self.r.register_script(_EXTEND)
        self._assign_script = self.r.register_script(_ASSIGN)
        self._raise = self.r.register_script(_RAISE)
        self.stream = self.k("log")
        self.create_groups()
        self._warn_if_not_durable()
        if not self.r.exists(self.k("skus")) and self.r.hlen(self.k("items")):
            # A catalogue from before string ids: each product is keyed by its index's digits.
            self.put_items(self.items())

    def _connect(self, url: str) -> Any:
        import redis

        return redis.Redis.from_url(url, socket_connect_timeout=2, health_check_interval=30)

    def create_groups(self) -> None:
        """The updater's consumer group on the log stream (made with the stream; an existing one is kept)."""
        import redis

        try:
            self.r.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def k(self, *parts: str | int) -> bytes:
        return (self.prefix + ":".join(str(p) for p in parts)).encode()

    def uk(self, kind: str, user_id: str) -> bytes:
        """A key of one user's (`u`: record, `c`: consumed items): a Redis Cluster store puts it in the user's slot."""
        return self.k(kind, user_id)

    def fk(self, user_id: str) -> bytes:
        """The hash that holds this user's window features."""
        return self.k("features")

    def _warn_if_not_durable(self) -> None:
        try:
            cfg = self.r.config_get("append*")
        except Exception:  # managed Redis often forbids CONFIG; nothing to check then
            return
        if cfg.get("appendonly") != "yes" or cfg.get("appendfsync") != "always":
            log.warning("Redis at %s runs with appendonly=%s appendfsync=%s: acknowledged events can be "
                        "lost in a crash; use appendonly yes, appendfsync always", self.url,
                        cfg.get("appendonly"), cfg.get("appendfsync"))

    def close(self) -> None:
        self.r.close()

    # --- meta ---

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        # The client is made without decode_responses, so replies are bytes (the stubs say bytes | str).
        v = cast("bytes | None", self.r.hget(self.k("meta"), key))
        return default if v is None else v.decode()

    def set_meta(self, key: str, value: str) -> None:
        self.r.hset(self.k("meta"), key, value)

    # --- catalogue ---

    def put_items(self, items: Iterable[Item], vectors: dict[int, np.ndarray] | None = None,
                  provisional: Iterable[int] = ()) -> list[Item]:
        vectors, provisional = vectors or {}, set(provisional)
        items = self._assign(list(items))
        current = self.r.smembers(self.k("provisional"))
        p = self.r.pipeline(transaction=True)
        for it in items:
            if it.item_id in vectors:
                prov = it.item_id in provisional
                p.hset(self.k("vectors"), it.item_id, vectors[it.item_id].astype("<f4").tobytes())
                (p.sadd if prov else p.srem)(self.k("provisional"), it.item_id)
            else:
                prov = str(it.item_id).encode() in current
            p.hset(self.k("items"), it.item_id, _item_json(it, prov))
            p.hset(self.k("skus"), it.external_id, it.item_id)
        p.hincrby(self.k("meta"), "catalogue_version", 1)
        p.execute()
        return items

    def _assign(self, items: list[Item]) -> list[Item]:
        items = [it if it.sku or not it.item_id else replace(it, sku=str(it.item_id)) for it in items]
        explicit = [it.item_id for it in items if it.item_id]
        if explicit:
            self._raise(keys=[self.k("item_seq")], args=[max(explicit)])
        todo = [it.sku for it in items if not it.item_id]
        got: dict[str, int] = {}
        for lo in range(0, len(todo), 1000):
            chunk = todo[lo:lo + 1000]
            got.update(zip(chunk, self._assign_script(keys=[self.k("skus"), self.k("item_seq")], args=chunk)))
        return [it if it.item_id else replace(it, item_id=int(got[it.sku])) for it in items]

    def item_index(self, skus: Iterable[str]) -> dict[str, int]:
        skus = list(dict.fromkeys(skus))
        out: dict[str, int] = {}
        for lo in range(0, len(skus), 1000):
            chunk = skus[lo:lo + 1000]
            out.update((k, int(v)) for k, v in zip(chunk, self.r.hmget(self.k("skus"), chunk)) if v is not None)
        return out

    def items(self) -> list[Item]:
        return sorted((_item(v) for v in cast("list[bytes]", self.r.hvals(self.k("items")))), key=lambda it: it.item_id)

    def get_items(self, item_ids: Iterable[int]) -> dict[int, Item]:
        ids = sorted(set(item_ids))
        if not ids:
            return {}
        vals = cast("list[bytes | None]", self.r.hmget(self.k("items"), ids))
        return {i: _item(v) for i, v in zip(ids, vals) if v is not None}

    def item_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        raw = cast("dict[bytes, bytes]", self.r.hgetall(self.k("vectors")))
        if not raw:
            return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
        pairs = sorted((int(k), v) for k, v in raw.items())
        ids = np.array([i for i, _ in pairs], dtype=np.int64)
        return ids, np.stack([np.frombuffer(v, dtype="<f4") for _, v in pairs]).astype(np.float32)

    def provisional_items(self) -> set[int]:
        return {int(i) for i in self.r.smembers(self.k("provisional"))}

    # --- event log ---

    def append_events(self, events: list[Event]) -> list[bool]:
        if not events:
            return []
        keys = [self.stream] + [self.k("eid", e.event_id) for e in events]
        return [bool(x) for x in self._append(keys=keys, args=[self.dedupe_ttl] + [_payload(e) for e in events])]

    def conflicting(self, events: list[Event]) -> list[bool]:
        if not events:
            return []
        logged = cast("list[bytes | None]", self.r.mget([self.k("eid", e.event_id) for e in events]))
        return [digest is not None and len(digest) == 40  # '1': logged before digests were kept
                and digest.decode() != hashlib.sha1(_payload(e).encode()).hexdigest()
                for e, digest in zip(events, logged)]

    def import_events(self, events: Iterable[Event]) -> int:
        batch: list[Event] = []
        new = 0
        for e in events:
            batch.append(e)
            if len(batch) == 1000:
                new += sum(self.append_events(batch))
                batch = []
        return new + sum(self.append_events(batch))

    def log_head(self) -> int:
        last = cast("list[tuple[bytes, dict[bytes, bytes]]]", self.r.xrevrange(self.stream, count=1))
        return pos_of(last[0][0]) if last else 0

    def count_events(self, event_ids: list[str] | None = None) -> int:
        if event_ids is None:
            return self.r.xlen(self.stream)
        return self.r.exists(*[self.k("eid", i) for i in event_ids]) if event_ids else 0

    def iter_log(self, after: int = 0) -> Iterator[LogEntry]:
        start: str | bytes = "(" + id_of(after) if after else "-"
        for batch in log_batches():
            rows = cast("list[tuple[bytes, dict[bytes, bytes]]]",
                        self.r.xrange(self.stream, min=start, max="+", count=batch))
            if not rows:
                return
            for sid, fields in rows:
                yield _entry(sid, fields)
            start = b"(" + rows[-1][0]

    # --- the updater's consumer position ---

    @contextmanager
    def updater_session(self, timeout: float = 30.0):
        key, token = self.k("lock", "updater"), uuid.uuid4().hex
        deadline = time.monotonic() + timeout
        while not self.r.set(key, token, nx=True, px=LOCK_TTL_MS):
            if time.monotonic() >= deadline:
                raise TimeoutError(f"another updater held {key.decode()} for {timeout} s")
            time.sleep(0.002)
        self._session.recovered = False
        self._session.lock = (key, token, time.monotonic())
        try:
            yield
        finally:
            self._session.lock = None
            self._release(keys=[key], args=[token])

    @contextmanager
    def updater_step(self):
        held = getattr(self._session, "lock", None)
        if held and time.monotonic() - held[2] > LOCK_TTL_MS / 5000:
            if not self._extend(keys=[held[0]], args=[held[1], LOCK_TTL_MS]):
                raise TimeoutError("the updater lock expired mid-drain; another updater may be running")
            self._session.lock = (held[0], held[1], time.monotonic())
        yield

    claim_blocks = True

    def claim_events(self, limit: int, block: float = 0.0) -> list[LogEntry]:
        # First in each lock session, "0": entries delivered to us but never
        # acknowledged (a crash before XACK). Every step acknowledges all it
        # claims, so after that only ">" (new entries) can have anything.
        starts = (">",) if getattr(self._session, "recovered", False) else ("0", ">")
        for start in starts:
            wait = int(block * 1000) if start == ">" and block > 0 else None
            got = cast("list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]",
                       self.r.xreadgroup(GROUP, CONSUMER,  # type: ignore[arg-type]  # redis-py takes bytes names; stub says str
                                         {self.stream: start}, count=limit, block=wait))
            entries = [_entry(sid, f) for _, rows in got for sid, f in rows if f]
            if start == "0" and len(entries) < limit:
                self._session.recovered = True
            if entries:
                return entries
        return []

    def commit_updates(self, updates: Updates, entries: list[LogEntry]) -> None:
        p = self.r.pipeline(transaction=True)
        for user_id, rec in updates.records.items():
            p.hset(self.k("u", user_id), mapping=_record_mapping(rec))
        if updates.records:
            p.sadd(self.k("users"), *updates.records)
        for user_id, items in updates.consumed.items():
            p.sadd(self.k("c", user_id), *items)
        for item_id, n in updates.popularity.items():
            p.hincrby(self.k("popularity"), item_id, n)
        for item_id, n in updates.exposures.items():
            p.hincrby(self.k("exposures"), item_id, n)
        if entries:
            p.xack(self.stream, GROUP, *[id_of(e.pos) for e in entries])
        p.execute()

    def _group(self) -> dict:
        for g in self.r.xinfo_groups(self.stream):
            if g["name"] == GROUP:
                return g
        return {}

    def pending_count(self) -> int:
        g = self._group()
        lag = g.get("lag")
        if lag is None:  # Redis cannot tell after deletions; count what follows the group's id
            lag = len(cast("list[Any]", self.r.xrange(self.stream, min=b"(" + g["last-delivered-id"], max="+")))
        return int(g.get("pending", 0)) + int(lag)

    def wait_for_events(self, timeout: float) -> bool:
        g = self._group()
        if g.get("pending") or g.get("lag"):
            return True
        got = self.r.xread({self.stream: g.get("last-delivered-id", b"0-0")}, count=1,
                           block=max(1, int(timeout * 1000)))
        return bool(got)

    # --- users ---

    def user_records(self, user_ids: Iterable[str], dim: int) -> dict[str, UserRecord]:
        ids = list(dict.fromkeys(user_ids))
        p = self.r.pipeline(transaction=False)
        for u in ids:
            p.hmget(self.uk("u", u), _RECORD_FIELDS)
        return {u: _record(v, dim) for u, v in zip(ids, p.execute())}

    def has_user(self, user_id: str) -> bool:
        return bool(self.r.exists(self.uk("u", user_id)))

    def put_user_records(self, records: dict[str, UserRecord]) -> None:
        items = list(records.items())
        for i in range(0, len(items), 1000):
            p = self.r.pipeline(transaction=False)
            for user_id, rec in items[i:i + 1000]:
                p.hset(self.k("u", user_id), mapping=_record_mapping(rec))
            p.sadd(self.k("users"), *[u for u, _ in items[i:i + 1000]])
            p.execute()

    def user_ids(self) -> list[str]:
        return sorted(u.decode() for u in cast("set[bytes]", self.r.smembers(self.k("users"))))

    def consumed_items(self, user_id: str) -> set[int]:
        return {int(i) for i in self.r.smembers(self.uk("c", user_id))}

    def user_context(self, user_id: str, dim: int) -> UserContext:
        p = self.r.pipeline(transaction=False)
        p.hmget(self.uk("u", user_id), _RECORD_FIELDS)
        p.smembers(self.uk("c", user_id))
        p.hget(self.fk(user_id), user_id)
        rec, consumed, feats = p.execute()
        return UserContext(_record(rec, dim), {int(i) for i in consumed}, json.loads(feats) if feats else None)

    def reset_derived(self, records: dict[str, UserRecord], consumed: dict[str, set[int]],
                      popularity: dict[int, int], position: int) -> None:
        old = self.user_ids()
        for i in range(0, len(old), 1000):
            chunk = old[i:i + 1000]
            self.r.delete(*[self.uk("u", u) for u in chunk], *[self.uk("c", u) for u in chunk])
        self.r.delete(*self.shared_keys("users"), *self.shared_keys("popularity"))
        self.put_user_records(records)
        items = list(consumed.items())
        for i in range(0, len(items), 1000):
            p = self.r.pipeline(transaction=False)
            for user_id, its in items[i:i + 1000]:
                p.sadd(self.uk("c", user_id), *its)
            p.execute()
        if popularity:  # Mapping keys are invariant
            self.r.hset(self.shared_keys("popularity")[0], mapping=cast("dict[Any, int]", popularity))
        self.reset_groups(position)

    def shared_keys(self, kind: str) -> list[bytes]:
        """The keys of a store-wide set or counter (`users`, `popularity`, `exposures`): one here; a cluster
        store spreads it over its partitions. A whole count is written to the first."""
        return [self.k(kind)]

    def reset_groups(self, position: int) -> None:
        """The updater's consumer group resumes after log position `position` (0: from the start)."""
        self.r.xgroup_setid(self.stream, GROUP, id_of(position) if position else "0")

    # --- item stats, window features ---

    def item_counts(self) -> dict[int, int]:
        return {int(k): int(v) for k, v in self.r.hgetall(self.k("popularity")).items() if int(v) > 0}

    def exposures(self) -> dict[int, int]:
        return {int(k): int(v) for k, v in self.r.hgetall(self.k("exposures")).items() if int(v) > 0}

    def set_exposures(self, counts: dict[int, int]) -> None:
        p = self.r.pipeline(transaction=True)
        p.delete(self.k("exposures"))
        if counts:
            p.hset(self.k("exposures"), mapping=cast("dict[Any, int]", counts))  # Mapping keys are invariant
        p.execute()

    def put_profiles(self, profiles: dict[str, dict[str, str]]) -> None:
        items = list(profiles.items())
        for lo in range(0, len(items), 1000):
            self.r.hset(self.k("profiles"), mapping={u: json.dumps(p, sort_keys=True) for u, p in items[lo:lo + 1000]})

    def profiles(self) -> dict[str, dict[str, str]]:
        return {u.decode(): json.loads(d)
                for u, d in cast("dict[bytes, bytes]", self.r.hgetall(self.k("profiles"))).items()}

    def put_features(self, features: dict[str, dict]) -> None:
        p = self.r.pipeline(transaction=True)
        p.delete(self.k("features"))
        items = list(features.items())
        for i in range(0, len(items), 1000):
            p.hset(self.k("features"), mapping={u: json.dumps(f, separators=(",", ":")) for u, f in items[i:i + 1000]})
        p.execute()

    def features(self, user_id: str) -> dict | None:
        raw = self.r.hget(self.fk(user_id), user_id)
        return json.loads(raw) if raw else None

    # --- bundle records ---

    # Layout: rlog:<user> is a hash version -> sha256 (32) | sig (64) | blob; rhead maps each user to
    # u32 version | sha256 of its newest row; rsig:<version> maps user -> sig; rsigv lists those versions.

    def put_records(self, version: int, changed: dict[str, RecordRow], sigs: dict[str, bytes]) -> None:
        items = list(changed.items())
        for i in range(0, len(items), 1000):
            with self.r.pipeline(transaction=False) as p:
                for u, row in items[i : i + 1000]:
                    p.hset(self.k("rlog", u), str(row.version), row.sha256 + row.sig + row.blob)
                    p.hset(self.k("rhead"), u, row.version.to_bytes(4, "little") + row.sha256)
                p.execute()
        if sigs:
            self.r.hset(self.k("rsig", version), mapping=cast("dict[Any, bytes]", sigs))  # Mapping keys are invariant
            self.r.sadd(self.k("rsigv"), version)
        # Sync answers are cached per epoch (server/bundle/sync_answer.py): any write to the log starts a new one.
        self.set_meta(RECORDS_EPOCH, os.urandom(8).hex())

    def records_at(self, version: int, user_ids: list[str]) -> dict[str, RecordRow]:
        with self.r.pipeline(transaction=False) as p:
            for u in user_ids:
                p.hkeys(self.k("rlog", u))
            keys = p.execute()
        latest = {u: max((int(v) for v in ks if int(v) <= version), default=None) for u, ks in zip(user_ids, keys)}
        wanted = {u: v for u, v in latest.items() if v is not None}
        with self.r.pipeline(transaction=False) as p:
            for u, v in wanted.items():
                p.hget(self.k("rlog", u), str(v))
            vals = p.execute()
        return {u: RecordRow(v, val[96:], val[:32], val[32:96]) for (u, v), val in zip(wanted.items(), vals)
                if val is not None}

    def record_sigs(self, version: int, user_ids: list[str]) -> dict[str, bytes]:
        if not user_ids:
            return {}
        vals = cast("list[bytes | None]", self.r.hmget(self.k("rsig", version), user_ids))
        return {u: v for u, v in zip(user_ids, vals) if v is not None}

    def record_heads(self) -> dict[str, bytes]:
        return {u.decode(): v[4:] for u, v in cast("dict[bytes, bytes]", self.r.hgetall(self.k("rhead"))).items()}

    def compact_records(self, keep_from: int) -> int:
        for v in self.r.smembers(self.k("rsigv")):
            if int(v) < keep_from:
                self.r.delete(self.k("rsig", int(v)))
                self.r.srem(self.k("rsigv"), v)
        # Two pipelined round trips per chunk of users (their version lists, then the deletions),
        # not two per user: at 100,000 users the per-user loop was ~200,000 round trips.
        deleted = 0
        users = [u.decode() for u in cast("list[bytes]", self.r.hkeys(self.k("rhead")))]
        for at in range(0, len(users), 1000):
            keys = [self.k("rlog", u) for u in users[at:at + 1000]]
            pipe = self.r.pipeline(transaction=False)
            for key in keys:
                pipe.hkeys(key)
            drops = []
            for key, raw in zip(keys, pipe.execute()):
                versions = sorted(int(v) for v in raw)
                floor = max((v for v in versions if v <= keep_from), default=None)
                old = [str(v) for v in versions if floor is not None and v < floor]
                if old:
                    drops.append((key, old))
            if drops:
                pipe = self.r.pipeline(transaction=False)
                for key, old in drops:
                    pipe.hdel(key, *old)
                deleted += sum(pipe.execute())
        return deleted


def flush_prefix(store: RedisStore) -> None:
    """Delete every key under the store's prefix (tests and benchmarks start clean)."""
    for key in store.r.scan_iter(match=store.prefix.encode() + b"*", count=1000):
        store.r.delete(key)
    store.create_groups()

