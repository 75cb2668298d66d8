"""The device's real-time user state: every tracked event folded in at once, offline too.

The fold is pocketrank.shared.features.update_user_state, the function the server's
real-time layer runs on the same events, so the device and the server hold
the same vector for the same history. Items the user clicked, carted or bought
are remembered so the local rerank can leave them out.

Events name products by their own string ids (wire 5); the fold resolves one to
the held entry's index through the items table's unique `external_id`. An event
on a product the device holds no entry for folds no vector (the server's live
state, at the next sync, includes it) and is still marked consumed by its id, so
the product stays out of the local lists if its entry arrives later.

Each stored state carries a checksum (edge_runtime/rowsum.py), written with it and checked before it is
folded onto or reranked with.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable

import numpy as np

from pocketrank.shared.features import UserState, query_vector, update_user_state

from .cache import DeviceCache, drop_damaged_state, state_ok
from .rowsum import state_sum

CONSUMED_TYPES = ("click", "add_to_cart", "purchase")


class SearchIndex:
    """Titles and vectors of the held items for folding search events, reloaded when the held items change."""

    def __init__(self, cache: DeviceCache):
        self.cache = cache
        self._version: int | None = None
        self._titles: dict[int, str] = {}
        self._vectors: dict[int, np.ndarray] = {}

    def vector(self, query: str, conn: sqlite3.Connection) -> np.ndarray | None:
        # Items change with every sync that brings or drops entries, not only with the bundle version.
        version = int((conn.execute("SELECT value FROM meta WHERE key = 'items_revision'").fetchone() or ["0"])[0])
        if version != self._version:
            rows = conn.execute("SELECT item_id, title, vector FROM items").fetchall()
            self._titles = {r[0]: r[1] for r in rows}
            self._vectors = {r[0]: np.frombuffer(r[2], dtype="<f4") for r in rows}
            self._version = version
        return query_vector(query, self._titles, self._vectors)


def fold(conn: sqlite3.Connection, user_id: str, events: Iterable[dict], dim: int,
         search: Callable[[str, sqlite3.Connection], np.ndarray | None], base: UserState | None = None) -> UserState:
    """Fold `events` (oldest first) into the user's state and consumed items, inside the caller's transaction."""
    state = base
    if state is None:
        row = conn.execute("SELECT s, w, n_events, checksum FROM user_state WHERE user_id = ?", (user_id,)).fetchone()
        if row is not None and not state_ok(user_id, row):
            # Folding onto damaged bytes would carry the damage (a NaN) into every later state: start
            # empty, and have the next sync bring the server's live state with these events folded on top.
            drop_damaged_state(conn, user_id)
            row = None
        state = UserState(np.frombuffer(row[0], dtype="<f4").astype(np.float32), row[1], row[2]) if row \
            else UserState.empty(dim)
    for ev in events:
        # The product's own id; an outbox body queued before string ids may hold an integer: its digits.
        item_id = ev.get("item_id")
        item_id = None if item_id is None else str(item_id)
        vec = None
        if item_id is not None:
            row = conn.execute("SELECT vector FROM items WHERE external_id = ?", (item_id,)).fetchone()
            vec = np.frombuffer(row[0], dtype="<f4") if row else None
        if vec is None and ev.get("query"):
            vec = search(ev["query"], conn)
        state = update_user_state(state, vec, ev["type"])
        if ev["type"] in CONSUMED_TYPES and item_id is not None:
            conn.execute("INSERT OR REPLACE INTO consumed (user_id, item_id, type) VALUES (?, ?, ?)",
                         (user_id, item_id, ev["type"]))
    s = np.asarray(state.s, dtype="<f4").tobytes()
    conn.execute("INSERT OR REPLACE INTO user_state (user_id, s, w, n_events, updated_at, checksum) VALUES (?, ?, ?, ?, "
                 "strftime('%s', 'now'), ?)", (user_id, s, float(state.w), int(state.n_events),
                                               state_sum(user_id, s, state.w, state.n_events)))
    return state
