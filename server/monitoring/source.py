"""The one place monitoring reads events from the server's store, through the store's public
interface only (`iter_log`, `log_head`): nothing here knows how a backend keeps its log.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from shared.schemas import Event

MAX_EVENTS = 200_000  # the summary endpoint reads at most this many recent events


def recent_events(store: Any, since: float | None = None, limit: int = MAX_EVENTS) -> list[Event]:
    """The newest `limit` events with timestamp >= since (all if None), oldest first."""
    keep: deque[Event] = deque(maxlen=limit)
    for entry in store.iter_log(0):
        ev = getattr(entry, "event", entry)
        if since is None or ev.timestamp >= since:
            keep.append(ev)
    return list(keep)


def log_head(store: Any) -> int:
    """The event log's newest position (0 when empty): where a rollout's or a shadow's evidence starts."""
    return int(store.log_head())


def events_after(store: Any, position: int, limit: int = MAX_EVENTS) -> list[Event]:
    """The newest `limit` events logged after `position`, in log order.

    Unlike `recent_events` this reads only the log's tail, so a canary check costs what the
    rollout logged, not the whole history."""
    keep: deque[Event] = deque(maxlen=limit)
    for entry in store.iter_log(int(position)):
        keep.append(entry.event)
    return list(keep)


def events_per_second(store: Any, now: float, window: float = 60.0) -> float:
    """Events received in the last `window` seconds, per second (by the server's clock when stored)."""
    db = getattr(store, "db", None)
    if db is not None:
        cols = {r[1] for r in db.execute("PRAGMA table_info(events)")}
        if "received_at" in cols:
            n = db.execute("SELECT COUNT(*) FROM events WHERE received_at >= ?", (now - window,)).fetchone()[0]
            return n / window
    return 0.0
