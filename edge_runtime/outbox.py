"""The device outbox: events persist before track() returns and leave only when acknowledged.

Bounded by count and age. When full, the oldest events of the least valuable
type go first: impression, view, search, click, add_to_cart. Purchases are
never dropped silently: they are kept even past the bound, and the overflow
is reported in status().
"""

from __future__ import annotations

import json
import time

from shared.schemas import Event

from .cache import DeviceCache

DROP_ORDER = ("impression", "view", "search", "click", "add_to_cart")


class Outbox:
    def __init__(self, cache: DeviceCache, max_events: int = 10_000, max_age_days: float = 30.0):
        self.cache = cache
        self.max_events = max_events
        self.max_age = max_age_days * 86400
        self.dropped: dict[str, int] = {}

    def add(self, event: Event) -> None:
        body = json.dumps(event.to_dict(), sort_keys=True)
        self.cache.db["outbox"].insert(
            {"event_id": event.event_id, "user_id": event.user_id, "type": event.type, "body": body,
             "size": len(body), "created_at": time.time(), "attempts": 0},
            pk="event_id", ignore=True,
        )
        self._enforce_bounds()

    def _enforce_bounds(self) -> None:
        db = self.cache.db
        cutoff = time.time() - self.max_age
        for etype, n in db.execute(
            "SELECT type, COUNT(*) FROM outbox WHERE created_at < ? AND type != 'purchase' GROUP BY type", [cutoff]
        ).fetchall():
            self.dropped[etype] = self.dropped.get(etype, 0) + n
        db.execute("DELETE FROM outbox WHERE created_at < ? AND type != 'purchase'", [cutoff])
        excess = self.count() - self.max_events
        for etype in DROP_ORDER:
            if excess <= 0:
                break
            ids = [r[0] for r in db.execute(
                "SELECT event_id FROM outbox WHERE type = ? ORDER BY created_at LIMIT ?", [etype, excess])]
            if ids:
                db.execute(f"DELETE FROM outbox WHERE event_id IN ({','.join('?' * len(ids))})", ids)
                self.dropped[etype] = self.dropped.get(etype, 0) + len(ids)
                excess -= len(ids)
        db.conn.commit()

    def count(self) -> int:
        return self.cache.db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]

    def batch(self, limit: int) -> list[dict]:
        rows = self.cache.db.execute("SELECT body FROM outbox ORDER BY created_at, rowid LIMIT ?", [limit])
        return [json.loads(r[0]) for r in rows]

    def pending_for(self, user_id: str) -> list[dict]:
        rows = self.cache.db.execute(
            "SELECT body FROM outbox WHERE user_id = ? ORDER BY created_at, rowid", [user_id])
        return [json.loads(r[0]) for r in rows]

    def acknowledge(self, results: list[dict], sent: list[dict]) -> tuple[int, int]:
        """Delete accepted and duplicate events; move rejected ones aside with their reason."""
        by_id = {e["event_id"]: e for e in sent}
        done = [r["event_id"] for r in results if r.get("status") in ("accepted", "duplicate")]
        rejected = [r for r in results if r.get("status") == "rejected" and r.get("event_id") in by_id]
        db = self.cache.db
        with db.conn:
            for r in rejected:
                db["rejected"].upsert({"event_id": r["event_id"], "body": json.dumps(by_id[r["event_id"]]),
                                       "reason": f"{r.get('field')}: {r.get('reason')}", "at": time.time()},
                                      pk="event_id")
            gone = done + [r["event_id"] for r in rejected]
            for i in range(0, len(gone), 500):
                part = gone[i : i + 500]
                db.conn.execute(f"DELETE FROM outbox WHERE event_id IN ({','.join('?' * len(part))})", part)
        return len(done), len(rejected)
