"""The on-device user encoder of a sequence model: its int8 graph over the device's own event history.

A bundle whose manifest says `user_encoder: sequence` ships the model's
encoder (the `encoder` artifact, int8 ONNX). The device keeps each user's
history (table user_history): the server's recent events for the user as of
the last sync, then every event tracked here since, so a click made offline
moves the next ranking at once. The feed is pocketrank.shared.sequence.encoder_feed over
the vectors of the held item entries, the function the server builds its own
feed with, so the device's user vector is the server's for the same history
(exporter/sequence_parity.py gates the int8 graph against the server's fp32
one before a bundle is published).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import numpy as np

from pocketrank.shared.errors import ModelError
from pocketrank.shared.sequence import encoder_feed

from .rerank import DEFAULT_MAX_BYTES, load_session
from .rowsum import row_sum

EXPECTED_INPUTS = ("items", "types", "gaps")
EXPECTED_OUTPUTS = ("user",)
KEEP_EVENTS = 200  # per user; the encoder reads at most the newest max_len products of them


class DeviceEncoder:
    """One onnxruntime session of the encoder graph, checked as the ranker is (size, no external data, signature)."""

    def __init__(self, blob: bytes, max_len: int, max_bytes: int = DEFAULT_MAX_BYTES):
        self.session = load_session(blob, "encoder", EXPECTED_INPUTS, EXPECTED_OUTPUTS, max_bytes)
        dim = self.session.get_inputs()[0].shape[-1]
        if not isinstance(dim, int):
            raise ModelError(f"encoder's item width is not fixed ({dim!r})")
        self.dim, self.max_len = dim, max_len

    def user_vector(self, events: list[tuple[str, object, float]], vectors: list[np.ndarray | None]) -> np.ndarray | None:
        feed = encoder_feed(events, vectors, self.max_len, self.dim)
        if feed is None:
            return None
        out = self.session.run(None, feed)[0][0]
        return out if np.all(np.isfinite(out)) else None


HISTORY_SQL = (
    "SELECT h.type, h.ts, COALESCE(i.external_id, h.external_id, '#' || h.item_index), i.vector, "
    "h.user_id, h.item_index, h.external_id, h.checksum "
    "FROM user_history h LEFT JOIN items i ON (h.item_index IS NOT NULL AND i.item_id = h.item_index) "
    "OR (h.item_index IS NULL AND i.external_id = h.external_id) "
    "WHERE h.user_id = ? ORDER BY h.pos")


def history(query: Callable[[str, tuple], list[tuple]], user_id: str
            ) -> tuple[list[tuple[str, object, float]], list[np.ndarray | None]]:
    """The user's held history, oldest first, as (type, product, time) and each product's held vector (or None).
    `query`: DeviceCache.query (a committed read) or a transaction's connection's execute + fetchall."""
    rows = query(HISTORY_SQL, (user_id,))
    # A damaged row (its checksum does not match) is left out, never read as another product or time.
    rows = [r for r in rows if history_sum(r[4], r[0], r[5], r[6], r[1]) == r[7]]
    events = [(t, key, float(ts)) for t, ts, key, *_ in rows]
    vectors = [None if r[3] is None else np.frombuffer(r[3], dtype="<f4") for r in rows]
    return events, vectors


def history_sum(user_id: str, etype: str, item_index: int | None, external_id: str | None, ts: float) -> int:
    return row_sum(user_id, etype, item_index, external_id, float(ts))


def history_items(conn: sqlite3.Connection) -> set[int]:
    """Item indexes held histories name: their entries are kept (and asked for) like candidates'."""
    return {i for (i,) in conn.execute("SELECT DISTINCT item_index FROM user_history WHERE item_index IS NOT NULL")}


def append(conn: sqlite3.Connection, user_id: str, rows: list[tuple[str, int | None, str | None, float]]) -> None:
    """Add (type, item index or None, product id or None, time) rows to the user's history, keeping the newest."""
    conn.executemany("INSERT INTO user_history (user_id, type, item_index, external_id, ts, checksum) "
                     "VALUES (?, ?, ?, ?, ?, ?)",
                     [(user_id, t, i, e, float(ts), history_sum(user_id, t, i, e, ts)) for t, i, e, ts in rows])
    conn.execute("DELETE FROM user_history WHERE user_id = ? AND pos NOT IN (SELECT pos FROM user_history "
                 "WHERE user_id = ? ORDER BY pos DESC LIMIT ?)", (user_id, user_id, KEEP_EVENTS))


def replace(conn: sqlite3.Connection, user_id: str, rows: list[tuple[str, int | None, str | None, float]]) -> None:
    """The server's history for the user replaces the held one (the caller re-appends still-queued events)."""
    conn.execute("DELETE FROM user_history WHERE user_id = ?", (user_id,))
    append(conn, user_id, rows)
