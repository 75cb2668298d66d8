"""The device outbox: events persist before track() returns and leave only when acknowledged.

Bounded by count, bytes and age. The bounds are enforced in the same
transaction that adds an event, against running totals that triggers keep
(schema v2), so a bound holds at every commit and costs a single-row read.

What goes when a bound is crossed (documented order):

1. by age: every event older than `max_age_days`, except purchases;
2. by count or bytes: the oldest events of the least valuable type first, in
   the order impression, view, search, click, add_to_cart.

Purchases are never dropped. If purchases alone exceed a bound, they are kept,
the outbox stays over it, and `over_bounds()` says so; a purchase is lost only
if track() raised, which the app sees. Every drop is counted, per type and
reason, in the database (`dropped()`), so the report survives restarts.

Age is measured on the device's steady clock (edge_runtime/steadyclock.py), not
the wall clock: a wall clock corrected by years ages no event by years.

Every row carries a checksum of its id, user, type and body (edge_runtime/rowsum.py).
A row that fails it, or whose body is not a valid event of its own id, is
quarantined when read (moved to `damaged` with its bytes, counted in
status()["quarantined"]): it is never uploaded as something else, and it never
blocks the events behind it.

An event the server refuses as dated in its future (the device clock was ahead
when it was tracked) is not set aside: it is re-dated once by the server's clock
(the answer's `server_time` less the event's steady age) and sent again.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pocketrank.shared.schemas import Event

from .cache import DeviceCache
from .errors import StorageError
from .rowsum import event_sum, note_damage
from .steadyclock import SteadyClock

DROP_ORDER = ("impression", "view", "search", "click", "add_to_cart")
ANCHOR_EVERY = 60.0  # s of steady time between saves of the steady clock's reading


@dataclass(frozen=True)
class Batch:
    events: list[dict]
    key: str  # the idempotency key: the same events always make the same key
    rowids: list[int] = field(default_factory=list)  # the outbox rows the events were read from, in order

    def __len__(self) -> int:
        return len(self.events)


@dataclass
class Ack:
    """What one answer did to the outbox."""

    acknowledged: int = 0  # events the server accepted or already had
    rejected: int = 0  # events it refused, set aside with its reason
    redated: int = 0  # events it refused as dated in its future: re-dated by its clock, still queued
    removed: int = 0  # rows actually deleted from the outbox (progress is measured by this, not by the answer)


class Outbox:
    def __init__(self, cache: DeviceCache, max_events: int = 10_000, max_bytes: int = 4 << 20,
                 max_age_days: float = 30.0, clock: Callable[[], float] = time.time,
                 steady: SteadyClock | None = None):
        self.cache = cache
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.max_age = max_age_days * 86400
        self.clock = clock
        self.steady = steady or SteadyClock(clock)
        self.steady.resume(cache.get("steady_anchor"))
        self._anchored = -math.inf
        # Rows the server acknowledged whose deletion the storage refused (a full disk): not uploaded
        # again by this client; their deletion is retried first (retry_removal).
        self.unremoved: set[int] = set()
        self.quarantined_now = 0  # events quarantined by this client (flush reports the difference)
        try:
            with cache.tx() as conn:
                self._save_anchor(conn)
        except StorageError:
            pass  # read-only or full storage: the reading is saved with the next write that succeeds

    def _save_anchor(self, conn: sqlite3.Connection) -> None:
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('steady_anchor', ?)", (self.steady.anchor(),))
        self._anchored = self.steady.now()

    def add(self, event: Event, conn: sqlite3.Connection) -> None:
        """Queue `event` inside the caller's transaction, then enforce the bounds in it."""
        body = json.dumps(event.to_dict(), sort_keys=True, separators=(",", ":"))
        now, steady = self.clock(), self.steady.now()
        conn.execute("INSERT OR IGNORE INTO outbox (event_id, user_id, type, body, size, created_at, attempts, steady, "
                     "checksum) VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?)",
                     (event.event_id, event.user_id, event.type, body, len(body), now, steady,
                      event_sum(event.event_id, event.user_id, event.type, body)))
        if steady - self._anchored > ANCHOR_EVERY:
            self._save_anchor(conn)
        self._enforce(conn, steady, now)

    def _enforce(self, conn: sqlite3.Connection, steady: float, now: float) -> None:
        cutoff = steady - self.max_age
        if conn.execute("SELECT 1 FROM outbox WHERE steady < ? AND type != 'purchase' LIMIT 1",
                        (cutoff,)).fetchone():
            for etype, n in conn.execute("SELECT type, COUNT(*) FROM outbox WHERE steady < ? AND type != "
                                         "'purchase' GROUP BY type", (cutoff,)).fetchall():
                self._count_drop(conn, etype, "age", n, now)
            conn.execute("DELETE FROM outbox WHERE steady < ? AND type != 'purchase'", (cutoff,))
        events, nbytes = conn.execute("SELECT events, bytes FROM outbox_totals").fetchone()
        excess_events, excess_bytes = events - self.max_events, nbytes - self.max_bytes
        for etype in DROP_ORDER:
            if excess_events <= 0 and excess_bytes <= 0:
                return
            while excess_events > 0 or excess_bytes > 0:
                rows = conn.execute("SELECT rowid, size FROM outbox WHERE type = ? ORDER BY steady, rowid "
                                    "LIMIT 256", (etype,)).fetchall()
                if not rows:
                    break
                reason = "count" if excess_events > 0 else "bytes"
                gone = []
                for rowid, size in rows:
                    gone.append(rowid)
                    excess_events -= 1
                    excess_bytes -= size
                    if excess_events <= 0 and excess_bytes <= 0:
                        break
                conn.execute(f"DELETE FROM outbox WHERE rowid IN ({','.join('?' * len(gone))})", gone)
                self._count_drop(conn, etype, reason, len(gone), now)

    @staticmethod
    def _count_drop(conn: sqlite3.Connection, etype: str, reason: str, n: int, now: float) -> None:
        conn.execute("INSERT INTO outbox_dropped (type, reason, n, last_at) VALUES (?, ?, ?, ?) "
                     "ON CONFLICT (type, reason) DO UPDATE SET n = n + excluded.n, last_at = excluded.last_at",
                     (etype, reason, n, now))

    # --- reads ---

    def totals(self) -> tuple[int, int]:
        """(events, bytes) queued."""
        row = self.cache.query_one("SELECT events, bytes FROM outbox_totals")
        assert row is not None  # a view of aggregates: always one row
        return tuple(row)

    def count(self) -> int:
        return self.totals()[0]

    def over_bounds(self) -> bool:
        """True only when purchases alone hold the outbox above a bound (they are never dropped)."""
        events, nbytes = self.totals()
        return events > self.max_events or nbytes > self.max_bytes

    def oldest_age(self) -> float | None:
        """Seconds the oldest queued event has waited, on the steady clock."""
        row = self.cache.query_one("SELECT MIN(steady) FROM outbox")
        assert row is not None  # an aggregate without GROUP BY: always one row
        return None if row[0] is None else max(0.0, self.steady.now() - row[0])

    @property
    def dropped(self) -> dict[str, int]:
        """Events dropped so far, per type (all reasons)."""
        return dict(self.cache.query("SELECT type, SUM(n) FROM outbox_dropped GROUP BY type"))

    def dropped_by_reason(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for etype, reason, n in self.cache.query("SELECT type, reason, n FROM outbox_dropped"):
            out.setdefault(reason, {})[etype] = n
        return out

    def quarantined(self) -> int:
        """Queued events found damaged and set aside (never uploaded), over the database's life."""
        row = self.cache.query_one("SELECT COUNT(*) FROM damaged WHERE kind = 'event'")
        assert row is not None  # COUNT(*) always returns one row
        return row[0]

    def batch(self, max_events: int, max_bytes: int = 256 << 10) -> list[dict]:
        return self.next_batch(max_events, max_bytes).events

    def next_batch(self, max_events: int, max_bytes: int = 256 << 10) -> Batch:
        """The oldest sound events, at most `max_events` of them and about `max_bytes` of JSON (at least one).

        A damaged row met on the way is quarantined, and the batch is read again without it."""
        while True:
            rows = self.cache.query("SELECT rowid, event_id, user_id, type, body, size, checksum FROM outbox "
                                    "ORDER BY steady, rowid LIMIT ?", (max_events,))
            taken: list[tuple[int, str, dict]] = []
            damaged: list[tuple[tuple, str]] = []
            total = 0
            for row in rows:
                event, problem = _read(row)
                if problem is not None:
                    damaged.append((row, problem))
                    continue
                if taken and total + row[5] > max_bytes:
                    break
                assert event is not None  # no problem: a sound event
                taken.append((row[0], row[1], event))
                total += row[5] + 1
            if not damaged:
                break
            with self.cache.tx() as conn:
                self._quarantine(conn, damaged)
        key = hashlib.sha256("\n".join(e for _, e, _ in taken).encode()).hexdigest()[:32]
        return Batch([ev for _, _, ev in taken], key, [r for r, _, _ in taken])

    def pending_for(self, user_id: str, conn: sqlite3.Connection | None = None) -> list[dict]:
        """The user's queued events, oldest first; damaged ones are quarantined (in `conn`'s transaction if given)."""
        sql = "SELECT rowid, event_id, user_id, type, body, size, checksum FROM outbox WHERE user_id = ? ORDER BY steady, rowid"
        rows = conn.execute(sql, (user_id,)).fetchall() if conn is not None else self.cache.query(sql, (user_id,))
        events: list[dict] = []
        damaged: list[tuple[tuple, str]] = []
        for row in rows:
            event, problem = _read(row)
            if event is None:
                damaged.append((row, problem or "unreadable"))
            else:
                events.append(event)
        if damaged:
            if conn is not None:
                self._quarantine(conn, damaged)
            else:
                with self.cache.tx() as own:
                    self._quarantine(own, damaged)
        return events

    def _quarantine(self, conn: sqlite3.Connection, damaged: list[tuple[tuple, str]]) -> None:
        now = self.clock()
        for row, problem in damaged:
            note_damage(conn, "event", row[1], f"queued event quarantined: {problem}", now, row[4])
            conn.execute("DELETE FROM outbox WHERE rowid = ?", (row[0],))
        self.quarantined_now += len(damaged)

    # --- acknowledgement ---

    def acknowledge(self, results: list[dict], sent: list[dict], rowids: list[int] | None = None,
                    server_time: float | None = None) -> Ack:
        """Delete accepted and duplicate events; move rejected ones aside with their reason; re-date (once) those
        refused as dated in the server's future, when the answer gave the server's time.

        A conflict (the server logged another event under the id) is set aside like a rejection:
        resending can never get it logged. Only ids that were in `sent` count: an answer about anything else is ignored. With `rowids` (the
        batch's), the rows sent are the rows deleted, whatever their id column says. If the storage refuses
        the deletion, the acknowledged rows are remembered in `unremoved` and StorageError is raised.
        """
        by_id = {e["event_id"]: (e, rowids[i] if rowids else None) for i, e in enumerate(sent)}
        done = [r["event_id"] for r in results
                if isinstance(r, dict) and r.get("status") in ("accepted", "duplicate") and r.get("event_id") in by_id]
        rejected = [r for r in results if isinstance(r, dict) and r.get("status") in ("rejected", "conflict")
                    and r.get("event_id") in by_id]
        future = [r for r in rejected if r.get("field") == "timestamp" and server_time is not None]
        ack = Ack(acknowledged=len(done))
        now = self.clock()
        gone_ids = done + [r["event_id"] for r in rejected]
        try:
            with self.cache.tx() as conn:
                redated = {eid for eid in (r["event_id"] for r in future) if server_time is not None
                           and self._redate(conn, by_id[eid][0], by_id[eid][1], server_time)}
                setaside = [r for r in rejected if r["event_id"] not in redated]
                conn.executemany("INSERT OR REPLACE INTO rejected (event_id, body, reason, at) VALUES (?, ?, ?, ?)",
                                 [(r["event_id"], json.dumps(by_id[r["event_id"]][0]),
                                   f"{r.get('field')}: {r.get('reason')}", now) for r in setaside])
                gone_ids = done + [r["event_id"] for r in setaside]
                ack.rejected, ack.redated = len(setaside), len(redated)
                ack.removed = self._delete(conn, [(eid, by_id[eid][1]) for eid in gone_ids])
        except StorageError:
            self.unremoved.update(r for e in gone_ids if (r := by_id[e][1]) is not None)
            raise
        self.unremoved.difference_update(r for e in gone_ids if (r := by_id[e][1]) is not None)
        return ack

    @staticmethod
    def _delete(conn: sqlite3.Connection, rows: list[tuple[str, int | None]]) -> int:
        removed = 0
        by_rowid = [r for _, r in rows if r is not None]
        by_id = [e for e, r in rows if r is None]
        for column, keys in (("rowid", by_rowid), ("event_id", by_id)):
            for i in range(0, len(keys), 500):
                part = keys[i : i + 500]
                removed += conn.execute(f"DELETE FROM outbox WHERE {column} IN ({','.join('?' * len(part))})",
                                        part).rowcount
        return removed

    def _redate(self, conn: sqlite3.Connection, event: dict, rowid: int | None, server_time: float) -> bool:
        """Give a queued event the time it happened by the server's clock: the server's time less the event's
        age on the steady clock. Only once per event: refused again, it is set aside like any rejection."""
        where, key = ("rowid", rowid) if rowid is not None else ("event_id", event["event_id"])
        row = conn.execute(f"SELECT rowid, steady, redated FROM outbox WHERE {where} = ?", (key,)).fetchone()
        if row is None or row[2]:
            return False
        age = max(0.0, self.steady.now() - row[1]) if row[1] is not None else 0.0
        dated = dict(event, timestamp=max(0.0, server_time - age))
        body = json.dumps(dated, sort_keys=True, separators=(",", ":"))
        conn.execute("UPDATE outbox SET body = ?, size = ?, checksum = ?, redated = 1 WHERE rowid = ?",
                     (body, len(body), event_sum(event["event_id"], event["user_id"], event["type"], body), row[0]))
        return True

    def retry_removal(self) -> int:
        """Delete the rows the server acknowledged but the storage would not let go of; StorageError if it still
        will not. Returns how many went."""
        if not self.unremoved:
            return 0
        with self.cache.tx() as conn:
            removed = self._delete(conn, [("", r) for r in sorted(self.unremoved)])
        self.unremoved.clear()
        return removed


def _read(row: tuple) -> tuple[dict | None, str | None]:
    """(event, None) for a sound outbox row (rowid, event_id, user_id, type, body, size, checksum), else (None, why)."""
    _, event_id, user_id, etype, body, _, checksum = row
    try:
        if checksum is None or checksum != event_sum(event_id, user_id, etype, body):
            return None, "its checksum does not match (damaged on the device)"
    except TypeError:
        return None, "a column holds a value of the wrong type (damaged on the device)"
    try:
        event = json.loads(body)
    except (ValueError, TypeError) as exc:
        return None, f"its body is not JSON ({exc})"
    # Only what the upload itself needs is checked here: the server checks the rest and names the field
    # (a body an older SDK queued may differ from today's schema, yet be what it meant to send).
    if not isinstance(event, dict):
        return None, "its body is not a JSON object"
    if event.get("event_id") != event_id:
        return None, f"its body names event {event.get('event_id')!r}, its row {event_id!r}"
    return event, None
