"""Packed candidate rows: everything a local rerank reads about one user, in one SQLite row.

Read back as 200 item rows, one user's candidates took ~79 us; as one row of
packed arrays ~3 us. So each sync writes, per user, the candidate ids with
their vectors, stock flags and category codes already gathered from the item
table, and a rerank is one SELECT plus zero-copy numpy views. Rows are
rebuilt in the same transaction whenever the item table changes, so they can
never disagree with it.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

import numpy as np

from pocketrank.shared import wire
from pocketrank.shared.errors import IntegrityError

from .rowsum import blob_sum, packed_sum


@dataclass
class ItemTable:
    """The device's item table as arrays sorted by id."""

    ids: np.ndarray  # int64 (n,)
    vectors: np.ndarray  # float32 (n, dim)
    in_stock: np.ndarray  # uint8 (n,)
    cats: np.ndarray  # uint16 (n,), index into `categories`
    categories: list[str]

    @classmethod
    def load(cls, conn: sqlite3.Connection) -> ItemTable:
        rows = conn.execute("SELECT item_id, vector, in_stock, category FROM items ORDER BY item_id").fetchall()
        categories = sorted({r[3] or "" for r in rows})
        code = {c: i for i, c in enumerate(categories)}
        if not rows:
            return cls(np.zeros(0, np.int64), np.zeros((0, 0), np.float32), np.zeros(0, np.uint8),
                       np.zeros(0, np.uint16), categories)
        return cls(
            np.fromiter((r[0] for r in rows), np.int64, len(rows)),
            np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), -1),
            np.fromiter((1 if r[2] else 0 for r in rows), np.uint8, len(rows)),
            np.fromiter((code[r[3] or ""] for r in rows), np.uint16, len(rows)),
            categories,
        )

    def positions(self, item_ids: np.ndarray) -> np.ndarray:
        """Row of each id in the table, -1 where the table has no such item."""
        if len(self.ids) == 0:
            return np.full(len(item_ids), -1, np.int64)
        pos = np.searchsorted(self.ids, item_ids).clip(0, len(self.ids) - 1)
        return np.where(self.ids[pos] == item_ids, pos, -1)


def pack(table: ItemTable, record: bytes) -> tuple[bytes, bytes, bytes, bytes, bytes]:
    """(ids i32, server scores f32, vectors f32, stock u8, category codes u16) of one candidate record.

    Candidates whose item is not in the table are left out: they cannot be
    scored, shown with a title, or checked against the rules.
    """
    ids, scores = wire.unpack_candidates(record)
    pos = table.positions(ids)
    keep = pos >= 0
    pos = pos[keep]
    return (ids[keep].astype("<i4").tobytes(), scores[keep].astype("<f4").tobytes(),
            np.ascontiguousarray(table.vectors[pos], dtype="<f4").tobytes(),
            table.in_stock[pos].tobytes(), table.cats[pos].astype("<u2").tobytes())


def repack(conn: sqlite3.Connection, user_ids: list[str] | None = None, table: ItemTable | None = None,
           skip_damaged: bool = False, checksums: bool = True) -> list[str]:
    """Rebuild the packed columns of `user_ids` (every user when None) from their records; returns the users
    whose record is damaged.

    Runs inside the caller's transaction. With `skip_damaged` (a sync, which replaces such records
    in its next round), a record that no longer decodes, or no longer matches its checksum, gets empty
    packed columns and version 0 (asked for whole at the next sync) instead of an error. Each row's
    checksums (edge_runtime/rowsum.py) are written with it; `checksums=False` only for the v2 migration,
    whose tables have no column for them yet.
    """
    table = table or ItemTable.load(conn)
    cols = "user_id, blob, blob_checksum" if checksums else "user_id, blob, NULL"
    if user_ids is None:
        rows = conn.execute(f"SELECT {cols} FROM candidates").fetchall()
    else:
        rows = []
        for i in range(0, len(user_ids), 500):
            part = user_ids[i : i + 500]
            rows += conn.execute(f"SELECT {cols} FROM candidates WHERE user_id IN ({','.join('?' * len(part))})",
                                 part).fetchall()
    damaged: list[str] = []

    def packed(uid: str, blob: bytes, held_sum: int | None) -> tuple[bytes, ...]:
        try:
            # A record written by this sync has no checksum yet (its INSERT OR REPLACE cleared it): it was
            # verified against its signature a moment ago. One held from before must still match its own.
            if held_sum is not None and held_sum != blob_sum(uid, blob):
                raise IntegrityError(f"the held record of user {uid!r} is damaged on the device (checksum "
                                     "mismatch); sync again")
            return pack(table, blob)
        except IntegrityError:
            if not skip_damaged:
                raise
            damaged.append(uid)
            return (b"",) * 5

    if not checksums:
        conn.executemany("UPDATE candidates SET ids = ?, scores = ?, vectors = ?, stock = ?, cats = ? "
                         "WHERE user_id = ?", [(*packed(uid, blob, None), uid) for uid, blob, _ in rows])
    else:
        updates = []
        for uid, blob, held_sum in rows:
            cols5 = packed(uid, blob, held_sum)
            whole = uid not in damaged
            updates.append((*cols5, packed_sum(uid, *cols5), blob_sum(uid, blob) if whole else held_sum,
                            None if whole else 0, uid))
        conn.executemany("UPDATE candidates SET ids = ?, scores = ?, vectors = ?, stock = ?, cats = ?, checksum = ?, "
                         "blob_checksum = ?, version = COALESCE(?, version) WHERE user_id = ?", updates)
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('categories', ?)", (json.dumps(table.categories),))
    return damaged


@dataclass
class Candidates:
    """One user's packed row, as read-only views on the row's bytes."""

    ids: np.ndarray  # int32
    scores: np.ndarray  # float32, the server's order
    vectors: np.ndarray  # float32 (n, dim)
    in_stock: np.ndarray  # uint8
    cats: np.ndarray  # uint16
    version: int
    received_at: float

    @classmethod
    def from_row(cls, row: tuple) -> Candidates:
        ids_b, scores_b, vectors_b, stock_b, cats_b, version, received_at = row
        ids = np.frombuffer(ids_b or b"", dtype="<i4")
        n = len(ids)
        vectors = np.frombuffer(vectors_b or b"", dtype="<f4")
        return cls(ids, np.frombuffer(scores_b or b"", dtype="<f4"),
                   vectors.reshape(n, -1) if n else vectors.reshape(0, 0),
                   np.frombuffer(stock_b or b"", dtype=np.uint8), np.frombuffer(cats_b or b"", dtype="<u2"),
                   int(version), float(received_at))
