"""The Redis store on a Redis Cluster (POCKETRANK_REDIS_CLUSTER=1): keys placed by hash tag, the log partitioned by user.

A cluster runs a multi-key command, transaction or script only on keys of one hash slot, and
one stream lives on one master. So the event log is N streams (POCKETRANK_REDIS_PARTITIONS,
default 16), a user's events go to partition crc32(user id) mod N, and every key of that user
carries the partition's hash tag: the fold of a batch (records, consumed items, the counters it
moved, and the XACK) stays one MULTI/EXEC on one slot, as on one Redis. With P the prefix:

    P{Pp<n>}:log                  partition n's stream, with its consumer group "updater"
    P{Pp<n>}:u:<user> / :c:<user> the user's record and consumed items
    P{Pp<n>}:users, :popularity, :exposures, :features    partition n's share of those tables
    P{Pp<n>}:eid:<event id>       the dedupe key the append checks atomically with its XADD
    P{Pp<n>}:lock                 the lock of the updater folding partition n
    P{Pcat}:meta, :items, :vectors, :skus, :provisional, :item_seq   catalogue and meta, one slot
    P eid:<event id>              the event's digest, one per id whatever its user (conflicts)
    P seq                         the global sequence of positions
    P updaters, P exclusive       updater heartbeats; an exclusive session asking consumers to yield

Bundle records (rlog, rhead, rsig) and profiles keep the single-Redis layout: each key is read
on its own or in a pipeline, which a cluster splits by slot.

Positions. An append takes a block of numbers from the `seq` counter (one INCRBY) and writes its
events into their partitions with stream ids "<g>-<partition>"; g is the block's number, raised
past the partition's last entry when a concurrent append with a later block got there first. A
position is the stream id packed as in RedisStore ((g << 20) | partition): unique, increasing
within a partition (so within a user, which is what the fold relies on), and nearly global
order across partitions; iter_log merges the partitions by position. What it costs: one
round trip for the counter and one script per partition an append touches; and an event
appended between its INCRBY and its XADD can show up in iter_log after a reader has gone past a
higher position in another partition (a tail reader such as the running metrics can miss it;
the fold never does, its consumer groups are per partition).

Updaters. A consumer session (`pocketrank updater`) holds a share of the partitions, ceil(N /
live updaters), by a lock per partition; several processes fold side by side, each partition in
order. updater_session (rebase, the embedded fold) holds every partition.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import logging
import math
import random
import time
import uuid
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, cast

from pocketrank.shared.errors import PocketrankError, ValidationError
from pocketrank.shared.schemas import Event

from .base import CONSUMED_TYPES, LogEntry, Updates, UserRecord, log_batches
from .redis import _EXTEND, _RELEASE, GROUP, LOCK_TTL_MS, RedisStore, _entry, _payload, _record_mapping, id_of, pos_of

log = logging.getLogger(__name__)

CONSUMER = b"updater"  # one name per partition: the next holder of a partition's lock re-reads what was pending
_PART_MASK = (1 << 20) - 1
_CATALOGUE = frozenset({"meta", "items", "vectors", "skus", "provisional", "item_seq"})
HEARTBEAT_MS = 10_000  # an updater not seen for this long no longer counts towards the shares
IDLE_POLL = 0.005  # s between reads of the held partitions when nothing is new (XREADGROUP blocks on one slot only)

# KEYS[1]: the partition's stream; KEYS[2..]: its dedupe keys. ARGV: ttl, partition, then per event its number
# from the block and its payload. An event whose dedupe key is new is added with id "<g>-<partition>", g its
# number or, if a concurrent append with a later block got there first, one past the stream's last entry.
_PART_APPEND = """
local last = 0
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #top > 0 then last = tonumber(string.match(top[1][1], '^(%d+)-')) end
local out = {}
for i = 2, #KEYS do
  if redis.call('SET', KEYS[i], '1', 'NX', 'EX', ARGV[1]) then
    local g = tonumber(ARGV[2 * i - 1])
    if g <= last then g = last + 1 end
    redis.call('XADD', KEYS[1], string.format('%d-%s', g, ARGV[2]), 'e', ARGV[2 * i])
    last = g
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
"""


# An updater step's writes for one partition: KEYS are its keys; ARGV per command: how many arguments
# follow, the command, the index of its key in KEYS, the rest. Atomic, as MULTI/EXEC would be.
_APPLY = """
local i = 1
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  local cmd = {ARGV[i + 1], KEYS[tonumber(ARGV[i + 2])]}
  for j = 3, n do cmd[#cmd + 1] = ARGV[i + j] end
  redis.call(unpack(cmd))
  i = i + n + 1
end
return 0
"""


class _Ops:
    """The commands of one _APPLY script."""

    def __init__(self) -> None:
        self.keys: list[bytes] = []
        self.args: list[Any] = []

    def add(self, command: str, key: bytes, *rest: Any) -> None:
        self.keys.append(key)
        self.args += [2 + len(rest), command, len(self.keys), *rest]


def partition_of(pos: int) -> int:
    return pos & _PART_MASK


class RedisClusterStore(RedisStore):
    """RedisStore's interface on a Redis Cluster; see the module docstring for the layout."""

    backend = "redis"
    claim_blocks = True
    partial_claims = True

    def __init__(self, url: str = "redis://127.0.0.1:7000", prefix: str = "pocketrank:",
                 dedupe_ttl_days: float = 35.0, partitions: int = 16):
        if "{" in prefix or "}" in prefix:
            raise ValidationError("POCKETRANK_REDIS_PREFIX", "must not contain { or } on a Redis Cluster "
                                  "(braces choose the hash slot)")
        if not 1 <= partitions <= 1024:
            raise ValidationError("POCKETRANK_REDIS_PARTITIONS", "must be between 1 and 1024")
        self.prefix, self.partitions = prefix, partitions
        self.streams = [self.pk(p, "log") for p in range(partitions)]
        self.instance = uuid.uuid4().hex
        super().__init__(url, prefix, dedupe_ttl_days)
        made = self.get_meta("log_partitions")
        if made is None:
            self.set_meta("log_partitions", str(partitions))
        elif int(made) != partitions:
            raise PocketrankError(f"the store under {prefix!r} was made with {made} log partitions; set "
                                  f"POCKETRANK_REDIS_PARTITIONS={made} (changing it needs a new prefix and an import)")

    def _connect(self, url: str) -> Any:
        import redis
        from redis.cluster import RedisCluster
        from redis.exceptions import RedisClusterException

        try:
            return RedisCluster.from_url(url, socket_connect_timeout=2)
        except (redis.RedisError, RedisClusterException) as exc:
            raise PocketrankError(f"cannot reach a Redis Cluster at {url}: {exc}; start it, or unset "
                                  "POCKETRANK_REDIS_CLUSTER for a single Redis") from exc

    # --- keys ---

    def _tagged(self, tag: str, *parts: str | int) -> bytes:
        return (self.prefix + "{" + self.prefix + tag + "}:" + ":".join(str(p) for p in parts)).encode()

    def k(self, *parts: str | int) -> bytes:
        if parts and parts[0] in _CATALOGUE:  # one slot: put_items and the id scripts stay atomic
            return self._tagged("cat", *parts)
        return super().k(*parts)

    def pk(self, partition: int, *parts: str | int) -> bytes:
        return self._tagged(f"p{partition}", *parts)

    def part(self, user_id: str) -> int:
        return zlib.crc32(user_id.encode()) % self.partitions

    def uk(self, kind: str, user_id: str) -> bytes:
        return self.pk(self.part(user_id), kind, user_id)

    def fk(self, user_id: str) -> bytes:
        return self.pk(self.part(user_id), "features")

    def create_groups(self) -> None:
        import redis

        for stream in self.streams:
            try:
                self.r.xgroup_create(stream, GROUP, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def _each_partition(self, call) -> list:
        """call(pipeline, partition) for every partition in one pipeline (a round trip per master)."""
        p = self.r.pipeline(transaction=False)
        for n in range(self.partitions):
            call(p, n)
        return p.execute()

    # --- event log ---

    def append_events(self, events: list[Event]) -> list[bool]:
        if not events:
            return []
        payloads = [_payload(e) for e in events]
        digests = [hashlib.sha1(x.encode()).hexdigest() for x in payloads]
        # First the id's own key, whatever the user: the same id with other content (another user's
        # partition included) is refused here. A retry of the same event goes on to its partition,
        # whose script decides atomically with the XADD, so a crash between the two loses nothing.
        # Two pipelined rounds (each one round trip per master): the ids' keys with a block of numbers
        # (one per event, in request order, so a batch keeps its order in iter_log; a refused event leaves
        # a gap), then one script per partition the batch touches.
        p = self.r.pipeline(transaction=False)
        for e, d in zip(events, digests):
            p.set(self.k("eid", e.event_id), d, nx=True, get=True, ex=self.dedupe_ttl)
        p.incrby(self.k("seq"), len(events))
        *olds, top = p.execute()
        first = int(top) - len(events) + 1
        out = [False] * len(events)
        todo: dict[int, list[int]] = {}
        for i, (old, d) in enumerate(zip(olds, digests)):
            if old is None or old.decode() == d:
                todo.setdefault(self.part(events[i].user_id), []).append(i)
        if not todo:
            return out
        p = self.r.pipeline(transaction=False)
        for part, idx in todo.items():
            args: list[Any] = [self.dedupe_ttl, part]
            for i in idx:
                args += [first + i, payloads[i]]
            # EVAL, not EVALSHA: a pipeline cannot load a script a master lost; Redis caches the compiled body.
            p.execute_command("EVAL", _PART_APPEND, 1 + len(idx), self.streams[part],
                              *[self.pk(part, "eid", events[i].event_id) for i in idx], *args)
        for idx, got in zip(todo.values(), p.execute()):
            for i, x in zip(idx, got):
                out[i] = bool(x)
        return out

    def conflicting(self, events: list[Event]) -> list[bool]:
        if not events:
            return []
        logged = cast("list[bytes | None]", self.r.mget_nonatomic([self.k("eid", e.event_id) for e in events]))
        return [digest is not None and digest.decode() != hashlib.sha1(_payload(e).encode()).hexdigest()
                for e, digest in zip(events, logged)]

    def log_head(self) -> int:
        tops = self._each_partition(lambda p, n: p.xrevrange(self.streams[n], count=1))
        return max((pos_of(top[0][0]) for top in tops if top), default=0)

    def count_events(self, event_ids: list[str] | None = None) -> int:
        if event_ids is None:
            return sum(self._each_partition(lambda p, n: p.xlen(self.streams[n])))
        return super().count_events(event_ids)

    def _iter_partition(self, n: int, after: int) -> Iterator[LogEntry]:
        start: str | bytes = "(" + id_of(after) if after else "-"
        for batch in log_batches(most=5_000):
            rows = cast("list[tuple[bytes, dict[bytes, bytes]]]",
                        self.r.xrange(self.streams[n], min=start, max="+", count=batch))
            if not rows:
                return
            for sid, fields in rows:
                yield _entry(sid, fields)
            start = b"(" + rows[-1][0]

    def iter_log(self, after: int = 0) -> Iterator[LogEntry]:
        return heapq.merge(*(self._iter_partition(n, after) for n in range(self.partitions)), key=lambda e: e.pos)

    # --- the updaters' partitions ---

    def _grab(self, parts: list[int], token: str) -> list[int]:
        p = self.r.pipeline(transaction=False)
        for n in parts:
            p.set(self.pk(n, "lock"), token, nx=True, px=LOCK_TTL_MS)
        return [n for n, ok in zip(parts, p.execute()) if ok]

    def _let_go(self, parts: list[int], token: str) -> None:
        if parts:
            p = self.r.pipeline(transaction=False)
            for n in parts:
                p.execute_command("EVAL", _RELEASE, 1, self.pk(n, "lock"), token)
            p.execute()

    def _begin(self, held: list[int], token: str) -> None:
        s = self._session
        s.held, s.token, s.since = held, token, time.monotonic()
        s.recovered, s.buffer = set(), {}

    @contextmanager
    def _holding(self, held: list[int], token: str):
        self._begin(held, token)
        try:
            yield
        finally:
            self._session.held = []
            self._let_go(held, token)

    @contextmanager
    def updater_session(self, timeout: float = 30.0):
        """Every partition at once (all or none, then a random pause: two such sessions never deadlock).
        While it waits it asks consumer sessions to yield (they give their share back within 2 s)."""
        token, deadline = uuid.uuid4().hex, time.monotonic() + timeout
        everything = list(range(self.partitions))
        while True:
            got = self._grab(everything, token)
            if len(got) == self.partitions:
                break
            self._let_go(got, token)
            self.r.set(self.k("exclusive"), token, px=LOCK_TTL_MS)
            if time.monotonic() >= deadline:
                raise TimeoutError(f"updaters held partitions of {self.prefix}log for {timeout} s")
            time.sleep(random.uniform(0.001, 0.004))
        try:
            with self._holding(got, token):
                yield
        finally:
            self.r.eval(_RELEASE, 1, self.k("exclusive"), token)

    @contextmanager
    def consumer_session(self, timeout: float = 30.0):
        token, deadline = uuid.uuid4().hex, time.monotonic() + timeout
        start = zlib.crc32(self.instance.encode()) % self.partitions
        order = [(start + i) % self.partitions for i in range(self.partitions)]
        while True:
            now_ms = int(time.time() * 1000)
            p = self.r.pipeline(transaction=False)
            p.zadd(self.k("updaters"), {self.instance: now_ms})
            p.zremrangebyscore(self.k("updaters"), "-inf", now_ms - HEARTBEAT_MS)
            p.zcard(self.k("updaters"))
            p.exists(self.k("exclusive"))
            _, _, live, wanted = p.execute()
            if not wanted:
                got = self._grab(order, token)
                share = math.ceil(self.partitions / max(1, int(live)))
                self._let_go(got[share:], token)
                if got[:share]:
                    break
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no partition of {self.prefix}log was free for {timeout} s")
            time.sleep(0.01)
        with self._holding(got[:share], token):
            yield

    @contextmanager
    def updater_step(self):
        s = self._session
        held = getattr(s, "held", None)
        if held and time.monotonic() - s.since > LOCK_TTL_MS / 5000:
            p = self.r.pipeline(transaction=False)
            for n in held:
                p.execute_command("EVAL", _EXTEND, 1, self.pk(n, "lock"), s.token, LOCK_TTL_MS)
            if not all(p.execute()):
                raise TimeoutError("an updater lock expired mid-drain; another updater may be running")
            s.since = time.monotonic()
        yield

    def claim_events(self, limit: int, block: float = 0.0) -> list[LogEntry]:
        # First, per partition, what was delivered but never acknowledged (a crash, or a session that
        # ended with some read ahead): one partition per call, since only there can the fold skip an
        # entry (commit_updates relies on it). Then new entries of every held partition, read in one
        # pipelined round; what does not fit in `limit` waits in the session for the next call.
        s = self._session
        deadline = time.monotonic() + block
        while True:
            for n in s.held:
                if n not in s.recovered:
                    got = self._read(n, "0", limit)
                    if len(got) < limit:
                        s.recovered.add(n)
                    if got:
                        return got
            if s.buffer:
                out: list[LogEntry] = []
                for n in list(s.buffer):
                    got = s.buffer.pop(n)
                    room = limit - len(out)
                    if len(got) > room:
                        s.buffer[n] = got[room:]
                    out += got[:room]
                    if len(out) >= limit:
                        break
                return out
            p = self.r.pipeline(transaction=False)
            for n in s.held:
                p.xreadgroup(GROUP, CONSUMER, {self.streams[n]: ">"}, count=limit)  # type: ignore[arg-type]  # bytes names
            for n, got in zip(s.held, p.execute()):
                entries = [_entry(sid, f) for _, rows in got or [] for sid, f in rows if f]
                if entries:
                    s.buffer[n] = entries
            if s.buffer:
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                return []
            time.sleep(min(IDLE_POLL, left))

    def _read(self, n: int, start: str, limit: int) -> list[LogEntry]:
        got = cast("list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]",
                   self.r.xreadgroup(GROUP, CONSUMER, {self.streams[n]: start}, count=limit))  # type: ignore[arg-type]
        return [_entry(sid, f) for _, rows in got for sid, f in rows if f]

    def commit_updates(self, updates: Updates, entries: list[LogEntry]) -> None:
        acks: dict[int, list[str]] = {}
        for e in entries:
            acks.setdefault(partition_of(e.pos), []).append(id_of(e.pos))
        counters = self._counters_by_partition(updates, entries)
        parts = sorted({self.part(u) for u in (*updates.records, *updates.consumed)} | set(acks) | set(counters))
        # One script per partition, atomic on its slot like MULTI/EXEC, all sent in one pipelined round.
        ops: dict[int, _Ops] = {n: _Ops() for n in parts}
        for u, rec in updates.records.items():
            o = ops[self.part(u)]
            o.add("HSET", self.uk("u", u), *[x for kv in _record_mapping(rec).items() for x in kv])
        for n in parts:
            mine = [u for u in updates.records if self.part(u) == n]
            if mine:
                ops[n].add("SADD", self.pk(n, "users"), *mine)
        for u, items in updates.consumed.items():
            if items:
                ops[self.part(u)].add("SADD", self.uk("c", u), *items)
        for n, (pop, exp) in counters.items():
            for item_id, c in pop.items():
                ops[n].add("HINCRBY", self.pk(n, "popularity"), item_id, c)
            for item_id, c in exp.items():
                ops[n].add("HINCRBY", self.pk(n, "exposures"), item_id, c)
        for n, ids in acks.items():
            ops[n].add("XACK", self.streams[n], GROUP, *ids)
        p = self.r.pipeline(transaction=False)
        for o in ops.values():
            if o.keys:
                p.execute_command("EVAL", _APPLY, len(o.keys), *o.keys, *o.args)
        p.execute()

    def _counters_by_partition(self, updates: Updates, entries: list[LogEntry]
                               ) -> dict[int, tuple[dict[int, int], dict[int, int]]]:
        """The step's item counters, split by the partition of the entries that moved them (each
        partition's share commits with its XACK). Entries of several partitions are all new (claim_events),
        so the fold applied each and the split follows its rule; entries of one partition (redelivered ones
        among them, which the fold may have skipped) take the step's counters as they are."""
        parts = {partition_of(e.pos) for e in entries}
        if len(parts) <= 1:
            n = parts.pop() if parts else min((self.part(u) for u in updates.records), default=0)
            return {n: (updates.popularity, updates.exposures)} if updates.popularity or updates.exposures else {}
        out: dict[int, tuple[dict[int, int], dict[int, int]]] = {}
        for e in entries:
            item = e.event.item_id
            if item is None or (e.event.type not in CONSUMED_TYPES and e.event.type != "impression"):
                continue
            pop, exp = out.setdefault(partition_of(e.pos), ({}, {}))
            into = pop if e.event.type in CONSUMED_TYPES else exp
            into[int(item)] = into.get(int(item), 0) + 1
        total_pop: dict[int, int] = {}
        total_exp: dict[int, int] = {}
        for pop, exp in out.values():
            for i, c in pop.items():
                total_pop[i] = total_pop.get(i, 0) + c
            for i, c in exp.items():
                total_exp[i] = total_exp.get(i, 0) + c
        if total_pop != updates.popularity or total_exp != updates.exposures:  # not expected; stay exact in sum
            log.warning("an updater step's item counters differ from its entries'; committing them in one partition")
            return {min(parts): (updates.popularity, updates.exposures)}
        return out

    def pending_count(self) -> int:
        total = 0
        for n, groups in enumerate(self._each_partition(lambda p, n: p.xinfo_groups(self.streams[n]))):
            g: dict[str, Any] = next((g for g in groups if g["name"] == GROUP), {})
            lag = g.get("lag")
            if lag is None:  # unknown after a SETID; count what follows the group's id
                lag = len(cast("list[Any]", self.r.xrange(self.streams[n], min=b"(" + g["last-delivered-id"],
                                                          max="+")))
            total += int(g.get("pending", 0)) + int(lag)
        return total

    def wait_for_events(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if self.pending_count():
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(0.01, left))

    # --- users, counters, features: one share per partition ---

    def put_user_records(self, records: dict[str, UserRecord]) -> None:
        items = list(records.items())
        for i in range(0, len(items), 1000):
            p = self.r.pipeline(transaction=False)
            for user_id, rec in items[i:i + 1000]:
                p.hset(self.uk("u", user_id), mapping=_record_mapping(rec))
                p.sadd(self.pk(self.part(user_id), "users"), user_id)
            p.execute()

    def user_ids(self) -> list[str]:
        return sorted(u.decode() for members in self._each_partition(lambda p, n: p.smembers(self.pk(n, "users")))
                      for u in members)

    def shared_keys(self, kind: str) -> list[bytes]:
        return [self.pk(n, kind) for n in range(self.partitions)]

    def reset_groups(self, position: int) -> None:
        # Each group resumes after its partition's last entry at or before `position`: an entry
        # that exists, so every later XADD (always past the stream's last id) is delivered.
        tops = self._each_partition(lambda p, n: p.xrevrange(self.streams[n], max=id_of(position), min="-", count=1))
        for n, top in enumerate(tops):
            self.r.xgroup_setid(self.streams[n], GROUP, top[0][0] if position and top else "0")

    def _summed(self, kind: str) -> dict[int, int]:
        out: dict[int, int] = {}
        for h in self._each_partition(lambda p, n: p.hgetall(self.pk(n, kind))):
            for k, v in h.items():
                out[int(k)] = out.get(int(k), 0) + int(v)
        return {k: v for k, v in out.items() if v > 0}

    def item_counts(self) -> dict[int, int]:
        return self._summed("popularity")

    def exposures(self) -> dict[int, int]:
        return self._summed("exposures")

    def set_exposures(self, counts: dict[int, int]) -> None:
        self.r.delete(*self.shared_keys("exposures"))
        if counts:
            self.r.hset(self.shared_keys("exposures")[0], mapping=cast("dict[Any, int]", counts))

    def put_features(self, features: dict[str, dict]) -> None:
        self.r.delete(*[self.pk(n, "features") for n in range(self.partitions)])
        items = list(features.items())
        for i in range(0, len(items), 1000):
            by_part: dict[int, dict[str, str]] = {}
            for u, f in items[i:i + 1000]:
                by_part.setdefault(self.part(u), {})[u] = json.dumps(f, separators=(",", ":"))
            p = self.r.pipeline(transaction=False)
            for n, mapping in by_part.items():
                p.hset(self.pk(n, "features"), mapping=mapping)
            p.execute()


def user_slots(store: RedisClusterStore, user_ids: Iterable[str]) -> dict[str, set[int]]:
    """Per user, the hash slots of its record, consumed items and log stream (one slot each, by design)."""
    from redis.crc import key_slot

    return {u: {key_slot(store.uk("u", u)), key_slot(store.uk("c", u)), key_slot(store.streams[store.part(u)])}
            for u in user_ids}
