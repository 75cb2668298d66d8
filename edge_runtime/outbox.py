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
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass

from shared.schemas import Event

from .cache import DeviceCache

DROP_ORDER = ("impression", "view", "search", "click", "add_to_cart")


@dataclass(frozen=True)
class Batch:
    events: list[dict]
    key: str  # the idempotency key: the same events always make the same key

    def __len__(self) -> int:
        return len(self.events)


class Outbox:
    def __init__(self, cache: DeviceCache, max_events: int = 10_000, max_bytes: int = 4 << 20,
                 max_age_days: float = 30.0, clock: Callable[[], float] = time.time):
        self.cache = cache
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.max_age = max_age_days * 86400
        self.clock = clock

    def add(self, event: Event, conn: sqlite3.Connection) -> None:
        """Queue `event` inside the caller's transaction, then enforce the bounds in it."""
        body = json.dumps(event.to_dict(), sort_keys=True, separators=(",", ":"))
        now = self.clock()
        conn.execute("INSERT OR IGNORE INTO outbox (event_id, user_id, type, body, size, created_at, attempts) "
                     "VALUES (?, ?, ?, ?, ?, ?, 0)", (event.event_id, event.user_id, event.type, body, len(body), now))
        self._enforce(conn, now)

    def _enforce(self, conn: sqlite3.Connection, now: float) -> None:
        cutoff = now - self.max_age
        if conn.execute("SELECT 1 FROM outbox WHERE created_at < ? AND type != 'purchase' LIMIT 1",
                        (cutoff,)).fetchone():
            for etype, n in conn.execute("SELECT type, COUNT(*) FROM outbox WHERE created_at < ? AND type != "
                                         "'purchase' GROUP BY type", (cutoff,)).fetchall():
                self._count_drop(conn, etype, "age", n, now)
            conn.execute("DELETE FROM outbox WHERE created_at < ? AND type != 'purchase'", (cutoff,))
        events, nbytes = conn.execute("SELECT events, bytes FROM outbox_totals").fetchone()
        excess_events, excess_bytes = events - self.max_events, nbytes - self.max_bytes
        for etype in DROP_ORDER:
            if excess_events <= 0 and excess_bytes <= 0:
                return
            while excess_events > 0 or excess_bytes > 0:
                rows = conn.execute("SELECT rowid, size FROM outbox WHERE type = ? ORDER BY created_at, rowid "
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
        row = self.cache.query_one("SELECT MIN(created_at) FROM outbox")
        assert row is not None  # an aggregate without GROUP BY: always one row
        return None if row[0] is None else max(0.0, self.clock() - row[0])

    @property
    def dropped(self) -> dict[str, int]:
        """Events dropped so far, per type (all reasons)."""
        return dict(self.cache.query("SELECT type, SUM(n) FROM outbox_dropped GROUP BY type"))

    def dropped_by_reason(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for etype, reason, n in self.cache.query("SELECT type, reason, n FROM outbox_dropped"):
            out.setdefault(reason, {})[etype] = n
        return out

    def batch(self, max_events: int, max_bytes: int = 256 << 10) -> list[dict]:
        return self.next_batch(max_events, max_bytes).events

    def next_batch(self, max_events: int, max_bytes: int = 256 << 10) -> Batch:
        """The oldest events, at most `max_events` of them and about `max_bytes` of JSON (at least one)."""
        rows = self.cache.query("SELECT event_id, body, size FROM outbox ORDER BY created_at, rowid LIMIT ?",
                                (max_events,))
        taken: list[tuple[str, bytes]] = []
        total = 0
        for event_id, body, size in rows:
            if taken and total + size > max_bytes:
                break
            taken.append((event_id, body))
            total += size + 1
        key = hashlib.sha256("\n".join(e for e, _ in taken).encode()).hexdigest()[:32]
        return Batch([json.loads(b) for _, b in taken], key)

    def pending_for(self, user_id: str, conn: sqlite3.Connection | None = None) -> list[dict]:
        sql, params = "SELECT body FROM outbox WHERE user_id = ? ORDER BY created_at, rowid", (user_id,)
        rows = conn.execute(sql, params).fetchall() if conn is not None else self.cache.query(sql, params)
        return [json.loads(r[0]) for r in rows]

    # --- acknowledgement ---

    def acknowledge(self, results: list[dict], sent: list[dict]) -> tuple[int, int]:
        """Delete accepted and duplicate events; move rejected ones aside with their reason.

        A conflict (the server logged another event under the id) is set aside like a rejection:
        resending can never get it logged. Only ids that were in `sent` count: an answer about
        anything else is ignored.
        """
        by_id = {e["event_id"]: e for e in sent}
        done = [r["event_id"] for r in results
                if isinstance(r, dict) and r.get("status") in ("accepted", "duplicate") and r.get("event_id") in by_id]
        rejected = [r for r in results if isinstance(r, dict) and r.get("status") in ("rejected", "conflict")
                    and r.get("event_id") in by_id]
        now = self.clock()
        with self.cache.tx() as conn:
            conn.executemany("INSERT OR REPLACE INTO rejected (event_id, body, reason, at) VALUES (?, ?, ?, ?)",
                             [(r["event_id"], json.dumps(by_id[r["event_id"]]),
                               f"{r.get('field')}: {r.get('reason')}", now) for r in rejected])
            gone = done + [r["event_id"] for r in rejected]
            for i in range(0, len(gone), 500):
                part = gone[i : i + 500]
                conn.execute(f"DELETE FROM outbox WHERE event_id IN ({','.join('?' * len(part))})", part)
        return len(done), len(rejected)
