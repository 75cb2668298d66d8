"""Where a rollout's evidence starts and what was logged after it, through the store's public
interface only (`iter_log`, `log_head`): nothing here knows how a backend keeps its log
(running.py reads the log the same way, as it grows).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from pocketrank.shared.schemas import Event

MAX_EVENTS = 200_000  # events_after's default bound


def log_head(store: Any) -> int:
    """The event log's newest position (0 when empty): where a rollout's or a shadow's evidence starts."""
    return int(store.log_head())


def events_after(store: Any, position: int, limit: int = MAX_EVENTS) -> list[Event]:
    """The newest `limit` events logged after `position`, in log order.

    It reads only the log's tail, so a canary check costs what the rollout logged, not the whole
    history."""
    keep: deque[Event] = deque(maxlen=limit)
    for entry in store.iter_log(int(position)):
        keep.append(entry.event)
    return list(keep)
