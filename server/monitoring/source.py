"""The one place monitoring reads events from the server's store.

The store is being split into backends (server/stores/: SQLite, Redis); this adapter uses the
store's public log reader `iter_log()` when it has one, and otherwise reads the SQLite `events`
table directly, with or without its `context` column. Nothing else in the package knows how
events are stored.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any

from shared.schemas import Event

MAX_EVENTS = 200_000  # the summary endpoint reads at most this many recent events


def _context(raw: Any) -> tuple[tuple[str, str], ...]:
    if not raw:
        return ()
    if isinstance(raw, (tuple, list)) and all(isinstance(p, (tuple, list)) for p in raw):
        return tuple(sorted((str(k), str(v)) for k, v in raw))
    try:
        obj = json.loads(raw) if isinstance(raw, (str, bytes)) else raw
    except ValueError:
        return ()
    return tuple(sorted((str(k), str(v)) for k, v in obj.items())) if isinstance(obj, dict) else ()


def recent_events(store: Any, since: float | None = None, limit: int = MAX_EVENTS) -> list[Event]:
    """The newest `limit` events with timestamp >= since (all if None), oldest first."""
    if hasattr(store, "iter_log"):
        keep: deque[Event] = deque(maxlen=limit)
        for entry in store.iter_log(0):
            ev = getattr(entry, "event", entry)
            if since is None or ev.timestamp >= since:
                keep.append(ev)
        return list(keep)
    db = store.db
    cols = {r[1] for r in db.execute("PRAGMA table_info(events)")}
    ctx = "context" if "context" in cols else "NULL"
    where, args = ("WHERE timestamp >= ?", [since]) if since is not None else ("", [])
    rows = db.execute(
        f"SELECT event_id, user_id, device_id, type, timestamp, item_id, query, session_id, {ctx} "
        f"FROM events {where} ORDER BY seq DESC LIMIT ?", [*args, int(limit)]).fetchall()
    return [Event(r[0], r[1], r[2], r[3], float(r[4]), r[5], r[6], r[7] or "", _context(r[8])) for r in reversed(rows)]


def log_head(store: Any) -> int:
    """The event log's newest position (0 when empty): where a rollout's or a shadow's evidence starts."""
    db = getattr(store, "db", None)
    if db is not None:
        return int(db.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0])
    r, stream = getattr(store, "r", None), getattr(store, "stream", None)
    if r is not None and stream is not None:
        from ..stores.redis import pos_of

        last = r.xrevrange(stream, count=1)
        return pos_of(last[0][0]) if last else 0
    pos = 0
    for entry in store.iter_log(0):
        pos = entry.pos
    return pos


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
