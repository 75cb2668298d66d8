"""The server's SQLite store: event log, user states, catalogue, bundle records.

SQLite in WAL mode with synchronous=FULL is the zero-setup default: an event
is on disk before its acknowledgement goes out, so an acknowledged event
survives a crash or restart. Redis is the scale-out path (a later issue).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from shared.features import UserState, update_user_state, query_vector
from shared.schemas import Event, Item

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    item_id INTEGER PRIMARY KEY, title TEXT NOT NULL, category TEXT NOT NULL,
    categories TEXT NOT NULL, year INTEGER, price REAL NOT NULL, in_stock INTEGER NOT NULL,
    vector BLOB
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL, device_id TEXT NOT NULL, type TEXT NOT NULL,
    item_id INTEGER, query TEXT, timestamp REAL NOT NULL, session_id TEXT NOT NULL,
    received_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_user ON events (user_id, seq);
CREATE TABLE IF NOT EXISTS user_state (
    user_id TEXT PRIMARY KEY, s BLOB NOT NULL, w REAL NOT NULL, n_events INTEGER NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS bundle_records (
    version INTEGER NOT NULL, user_id TEXT NOT NULL, blob BLOB NOT NULL,
    PRIMARY KEY (version, user_id)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

# Actions after which an item is not recommended to that user again.
CONSUMED_TYPES = ("click", "add_to_cart", "purchase")


class Store:
    """One SQLite file. Thread-safe: each thread gets its own connection."""

    def __init__(self, path: Path | str):
        self.path = str(path)
        self._local = threading.local()
        self.db.executescript(SCHEMA)  # executescript manages its own transaction

    @property
    def db(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            self._local.conn = conn
        return conn

    def tx(self) -> "_Tx":
        return _Tx(self.db)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # --- meta ---

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str, db: sqlite3.Connection | None = None) -> None:
        (db or self.db).execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # --- catalogue ---

    def put_items(self, items: Iterable[Item], vectors: dict[int, np.ndarray] | None = None) -> None:
        vectors = vectors or {}
        with self.tx() as db:
            db.executemany(
                "INSERT INTO items VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(item_id) DO UPDATE SET "
                "title=excluded.title, category=excluded.category, categories=excluded.categories, "
                "year=excluded.year, price=excluded.price, in_stock=excluded.in_stock, "
                "vector=COALESCE(excluded.vector, items.vector)",
                [
                    (it.item_id, it.title, it.category, json.dumps(list(it.categories)), it.year,
                     it.price, int(it.in_stock),
                     vectors[it.item_id].astype("<f4").tobytes() if it.item_id in vectors else None)
                    for it in items
                ],
            )

    def items(self) -> list[Item]:
        rows = self.db.execute(
            "SELECT item_id, title, category, year, price, in_stock, categories FROM items ORDER BY item_id"
        ).fetchall()
        return [Item(r[0], r[1], r[2], r[3], r[4], bool(r[5]), tuple(json.loads(r[6]))) for r in rows]

    def item_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of every item that has a vector, ordered by id."""
        rows = self.db.execute("SELECT item_id, vector FROM items WHERE vector IS NOT NULL ORDER BY item_id").fetchall()
        if not rows:
            return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        return ids, np.stack([np.frombuffer(r[1], dtype="<f4") for r in rows]).astype(np.float32)

    # --- events and user state ---

    def append_events(self, events: list[Event], vectors: dict[int, np.ndarray], titles: dict[int, str],
                      dim: int) -> list[bool]:
        """Log events and fold each new one into its user's state, in one transaction.

        Returns, per event, True if it was new and False if its event_id was
        already logged (a retry): duplicates change nothing.
        """
        now = time.time()
        out = []
        with self.tx() as db:
            for ev in events:
                cur = db.execute(
                    "INSERT OR IGNORE INTO events (event_id, user_id, device_id, type, item_id, query, "
                    "timestamp, session_id, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (ev.event_id, ev.user_id, ev.device_id, ev.type, ev.item_id, ev.query, ev.timestamp,
                     ev.session_id, now),
                )
                new = cur.rowcount == 1
                out.append(new)
                if new:
                    vec = vectors.get(ev.item_id) if ev.item_id is not None else None
                    if vec is None and ev.query:
                        vec = query_vector(ev.query, titles, vectors)
                    state = self.user_state(ev.user_id, dim, db)
                    self._put_state(db, ev.user_id, update_user_state(state, vec, ev.type), now)
        return out

    def import_events(self, events: Iterable[Event]) -> None:
        """Bulk-load a history (no state updates; call rebuild_states after)."""
        now = time.time()
        with self.tx() as db:
            db.executemany(
                "INSERT OR IGNORE INTO events (event_id, user_id, device_id, type, item_id, query, "
                "timestamp, session_id, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                ((e.event_id, e.user_id, e.device_id, e.type, e.item_id, e.query, e.timestamp,
                  e.session_id, now) for e in events),
            )

    def rebuild_states(self, vectors: dict[int, np.ndarray], titles: dict[int, str], dim: int) -> int:
        """Recompute every user state from the whole log (after retraining changes vectors)."""
        states: dict[str, UserState] = {}
        for user_id, etype, item_id, query in self.db.execute(
            "SELECT user_id, type, item_id, query FROM events ORDER BY seq"
        ):
            vec = vectors.get(item_id) if item_id is not None else None
            if vec is None and query:
                vec = query_vector(query, titles, vectors)
            states[user_id] = update_user_state(states.get(user_id) or UserState.empty(dim), vec, etype)
        now = time.time()
        with self.tx() as db:
            db.execute("DELETE FROM user_state")
            for uid, st in states.items():
                self._put_state(db, uid, st, now)
        return len(states)

    def user_state(self, user_id: str, dim: int, db: sqlite3.Connection | None = None) -> UserState:
        row = (db or self.db).execute("SELECT s, w, n_events FROM user_state WHERE user_id = ?", (user_id,)).fetchone()
        if row is None:
            return UserState.empty(dim)
        return UserState(np.frombuffer(row[0], dtype="<f4").astype(np.float32), row[1], row[2])

    @staticmethod
    def _put_state(db: sqlite3.Connection, user_id: str, st: UserState, now: float) -> None:
        db.execute("INSERT OR REPLACE INTO user_state VALUES (?, ?, ?, ?, ?)",
                   (user_id, np.asarray(st.s, dtype="<f4").tobytes(), float(st.w), st.n_events, now))

    def user_ids(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT user_id FROM user_state ORDER BY user_id")]

    def consumed_items(self, user_id: str) -> set[int]:
        marks = ",".join("?" * len(CONSUMED_TYPES))
        rows = self.db.execute(
            f"SELECT DISTINCT item_id FROM events WHERE user_id = ? AND item_id IS NOT NULL AND type IN ({marks})",
            (user_id, *CONSUMED_TYPES),
        )
        return {r[0] for r in rows}

    def item_counts(self) -> dict[int, int]:
        marks = ",".join("?" * len(CONSUMED_TYPES))
        rows = self.db.execute(
            f"SELECT item_id, COUNT(*) FROM events WHERE item_id IS NOT NULL AND type IN ({marks}) GROUP BY item_id",
            CONSUMED_TYPES,
        )
        return dict(rows.fetchall())

    def count_events(self, event_ids: list[str] | None = None) -> int:
        if event_ids is None:
            return self.db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        marks = ",".join("?" * len(event_ids))
        return self.db.execute(f"SELECT COUNT(*) FROM events WHERE event_id IN ({marks})", event_ids).fetchone()[0]

    def events_for(self, event_id: str) -> Iterator[tuple]:
        yield from self.db.execute("SELECT * FROM events WHERE event_id = ?", (event_id,))

    # --- bundle records ---

    def put_records(self, version: int, records: dict[str, bytes]) -> None:
        with self.tx() as db:
            db.executemany("INSERT OR REPLACE INTO bundle_records VALUES (?, ?, ?)",
                           [(version, u, b) for u, b in records.items()])

    def records(self, version: int, user_ids: list[str]) -> dict[str, bytes]:
        if not user_ids:
            return {}
        marks = ",".join("?" * len(user_ids))
        rows = self.db.execute(
            f"SELECT user_id, blob FROM bundle_records WHERE version = ? AND user_id IN ({marks})",
            (version, *user_ids),
        )
        return dict(rows.fetchall())


class _Tx:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception."""

    def __init__(self, db: sqlite3.Connection):
        self.conn = db

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")
