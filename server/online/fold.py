"""Where an event becomes a user vector: the fold of log entries into user records
(pocketrank.shared.features.update_user_state, the device's function), in chunks, and the full refold after item
vectors change. The real-time updater, `pocketrank rebase` and training all fold through here."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import cast

import numpy as np
from tqdm import tqdm

from pocketrank.shared.features import update_user_state

from ..stores.base import CONSUMED_TYPES, NO_ITEM, TYPE_CODE, LogEntry, Store, Updates, UserRecord, append_recent
from .titles import TitleIndex

CHUNK = 10_000


def fold_entries(entries: list[LogEntry], records: dict[str, UserRecord], updates: Updates,
                 vectors: dict[int, np.ndarray], titles: TitleIndex, dim: int, keep_recent: int,
                 now: float | None = None) -> None:
    """Fold log entries into `records` (users missing there start empty) and note what changed."""
    now = time.time() if now is None else now
    pushed: dict[str, list[tuple[float, int, int]]] = {}  # per user, the recent-sequence rows to add
    consumed, popularity, exposures = updates.consumed, updates.popularity, updates.exposures
    for entry in entries:
        ev = entry.event
        user = ev.user_id
        rec = records.get(user)
        if rec is None:
            rec = records[user] = UserRecord.empty(dim)
        if entry.pos <= rec.last_pos:
            continue  # folded before a crash cut the acknowledgement short
        item = cast("int | None", ev.item_id)  # logged events carry the catalogue index, not the product id
        vec = vectors.get(item) if item is not None else None
        if vec is None and ev.query:
            vec = titles.query_vector(ev.query)
        rec.state = update_user_state(rec.state, vec, ev.type)
        rows = pushed.get(user)
        if rows is None:
            rows = pushed[user] = []
        rows.append((ev.timestamp, item or NO_ITEM, TYPE_CODE[ev.type]))
        rec.last_pos, rec.updated_at = entry.pos, now
        updates.records[user] = rec
        if item is None:
            continue
        if ev.type in CONSUMED_TYPES:
            consumed.setdefault(user, set()).add(item)
            popularity[item] = popularity.get(item, 0) + 1
        elif ev.type == "impression":
            exposures[item] = exposures.get(item, 0) + 1
    # One new array per user per batch, not one per event.
    for user, rows in pushed.items():
        rec = records[user]
        rec.recent = append_recent(rec.recent, rows, keep_recent)


def fold_chunks(entries: Iterable[LogEntry], records: dict[str, UserRecord], updates: Updates,
                vectors: dict[int, np.ndarray], titles: TitleIndex, dim: int, keep_recent: int,
                bar: tqdm | None = None, chunk: int = CHUNK) -> tuple[int, int]:
    """Fold log entries in chunks of `chunk` with fold_entries; returns (last position folded or 0, how many)."""
    last, n, batch = 0, 0, []
    for entry in entries:
        n += 1
        batch.append(entry)
        if len(batch) >= chunk:
            fold_entries(batch, records, updates, vectors, titles, dim, keep_recent)
            last = batch[-1].pos
            if bar is not None:
                bar.update(len(batch))
            batch = []
    if batch:
        fold_entries(batch, records, updates, vectors, titles, dim, keep_recent)
        last = batch[-1].pos
        if bar is not None:
            bar.update(len(batch))
    return last, n


def rebuild_states(store: Store, vectors: dict[int, np.ndarray], titles: dict[int, str], dim: int,
                   keep_recent: int = 50) -> int:
    """Recompute every user record from the whole log (after retraining changes vectors)."""
    records: dict[str, UserRecord] = {}
    updates = Updates()
    last, _ = fold_chunks(store.iter_log(), records, updates, vectors, TitleIndex(titles, vectors), dim, keep_recent)
    store.reset_derived(records, updates.consumed, updates.popularity, last)
    return len(records)
