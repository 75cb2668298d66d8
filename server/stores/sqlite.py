"""The embedded default store: one SQLite file in WAL mode.

synchronous=FULL means a committed transaction is on disk (the WAL is fsynced
at COMMIT), so an event is durable before POST /v1/events answers and survives
a process crash, a restart and a power loss alike. That is the default because
a device deletes an event once it is acknowledged, and Redis runs with
appendfsync always. POCKETRANK_SQLITE_SYNCHRONOUS=normal skips the fsync at
COMMIT (the checkpoint thread's fsyncs remain): an acknowledged event still
survives the server process being killed, since it is in the WAL the OS holds,
but not a power cut or kernel crash in the moments before the next checkpoint. The updater's position is a meta row written in the same
transaction as the records it folded, so a crash never applies an event twice
or skips one. WAL checkpoints run in a background thread (checkpoint.py), not
inside a request's COMMIT.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from itertools import repeat
from pathlib import Path

import numpy as np

from pocketrank.shared.features import UserState
from pocketrank.shared.schemas import Event, Item

from .base import (
    RECORDS_EPOCH,
    TYPE_CODE,
    LogEntry,
    RecordRow,
    Store,
    Updates,
    UserContext,
    UserRecord,
    log_batches,
    pack_recent,
    unpack_recent,
)
from .checkpoint import checkpointer

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    item_id INTEGER PRIMARY KEY, title TEXT NOT NULL, category TEXT NOT NULL,
    categories TEXT NOT NULL, year INTEGER, price REAL NOT NULL, in_stock INTEGER NOT NULL,
    vector BLOB, provisional INTEGER NOT NULL DEFAULT 0,
    sku TEXT, currency TEXT NOT NULL DEFAULT '', attributes TEXT, created_at REAL
);
-- `seq` is the log position. Plain INTEGER PRIMARY KEY (max + 1) is monotonic here because events are
-- only ever appended, never deleted; AUTOINCREMENT would add a sqlite_sequence write per row for a
-- guarantee (no reuse after deleting the newest row) the log never needs: ~6% of ingestion CPU.
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY, event_id TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL, device_id TEXT NOT NULL, type TEXT NOT NULL,
    item_id INTEGER, query TEXT, timestamp REAL NOT NULL, session_id TEXT NOT NULL,
    received_at REAL NOT NULL, context TEXT
);
CREATE TABLE IF NOT EXISTS user_state (
    user_id TEXT PRIMARY KEY, s BLOB NOT NULL, w REAL NOT NULL, n_events INTEGER NOT NULL,
    updated_at REAL NOT NULL, last_pos INTEGER NOT NULL DEFAULT 0, recent BLOB
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS consumed (
    user_id TEXT NOT NULL, item_id INTEGER NOT NULL, PRIMARY KEY (user_id, item_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS item_stats (
    item_id INTEGER PRIMARY KEY, popularity INTEGER NOT NULL DEFAULT 0, exposures INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS user_features (user_id TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS user_profiles (user_id TEXT PRIMARY KEY, data TEXT NOT NULL) WITHOUT ROWID;
-- A rowid table: its ~1.3 KB rows would spill to overflow pages in a WITHOUT ROWID b-tree.
CREATE TABLE IF NOT EXISTS record_log (
    user_id TEXT NOT NULL, version INTEGER NOT NULL, blob BLOB NOT NULL, sha256 BLOB NOT NULL, sig BLOB NOT NULL,
    PRIMARY KEY (user_id, version)
);
CREATE TABLE IF NOT EXISTS record_sigs (
    version INTEGER NOT NULL, user_id TEXT NOT NULL, sig BLOB NOT NULL, PRIMARY KEY (version, user_id)
) WITHOUT ROWID;
-- wire v1's full copy of every record per version; v2 devices cannot use it (record_log replaces it)
DROP TABLE IF EXISTS bundle_records;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# Columns added after the first release; a store made before gets them on open.
MIGRATIONS = (
    ("items", "provisional", "INTEGER NOT NULL DEFAULT 0"),
    ("events", "context", "TEXT"),
    ("user_state", "last_pos", "INTEGER NOT NULL DEFAULT 0"),
    ("user_state", "recent", "BLOB"),
    ("items", "sku", "TEXT"),
    ("items", "currency", "TEXT NOT NULL DEFAULT ''"),
    ("items", "attributes", "TEXT"),
    ("items", "created_at", "REAL"),
)
# The product id -> index mapping. A catalogue from before string ids is keyed by its index's digits.
_SKU_INDEX = ("UPDATE items SET sku = CAST(item_id AS TEXT) WHERE sku IS NULL; "
              "CREATE UNIQUE INDEX IF NOT EXISTS items_sku ON items (sku);")
EVENT_COLUMNS = "event_id, user_id, device_id, type, item_id, query, timestamp, session_id, context"
POSITION = "updater_position"
_INSERT_EVENT = (f"INSERT OR IGNORE INTO events ({EVENT_COLUMNS}, received_at) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
_UPSERT_ITEM = (
    "INSERT INTO items (item_id, title, category, categories, year, price, in_stock, vector, provisional, sku, "
    "currency, attributes, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(item_id) DO UPDATE SET "
    "title=excluded.title, category=excluded.category, categories=excluded.categories, "
    "year=excluded.year, price=excluded.price, in_stock=excluded.in_stock, sku=excluded.sku, "
    "currency=excluded.currency, attributes=excluded.attributes, "
    "created_at=COALESCE(excluded.created_at, items.created_at), "
    "vector=COALESCE(excluded.vector, items.vector), "
    "provisional=CASE WHEN excluded.vector IS NULL THEN items.provisional ELSE excluded.provisional END"
)
_UPSERT_USER = ("INSERT INTO user_state VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(user_id) DO UPDATE SET "
                "s=excluded.s, w=excluded.w, n_events=excluded.n_events, updated_at=excluded.updated_at, "
                "last_pos=excluded.last_pos, recent=excluded.recent")
_INSERT_CONSUMED = "INSERT OR IGNORE INTO consumed VALUES (?, ?)"

class _WriteLock:
    """Writers take turns here: threads of a process on an RLock, processes on flock.

    SQLite's own busy handler would make a waiting writer sleep in steps of
    1, 2, 5, 10 ... 100 ms, which shows up as latency and lost throughput when
    gunicorn workers and the updater write at once; a blocked flock wakes the
    moment the holder lets go.
    """

    def __init__(self, path: str):
        self.path = path + "-writelock"
        self.rlock = threading.RLock()
        self.depth = 0
        self.fd: int | None = None
        self.pid = 0

    def __enter__(self) -> None:
        self.rlock.acquire()
        if self.depth == 0:
            if self.pid != os.getpid():  # a forked child must not share its parent's open file (and lock)
                self.fd, self.pid = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644), os.getpid()
            assert self.fd is not None  # opened above (pid starts at 0)
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        self.depth += 1

    def __exit__(self, *exc) -> None:
        self.depth -= 1
        if self.depth == 0:
            assert self.fd is not None  # opened by __enter__
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        self.rlock.release()


_WRITE_LOCKS: dict[str, _WriteLock] = {}
_WRITE_LOCKS_GUARD = threading.Lock()


def enable_wal(conn: sqlite3.Connection, attempts: int = 50) -> None:
    """Put the file in WAL mode. Switching needs the file to itself, and SQLite answers "database is locked"
    at once, without waiting out the busy timeout, when another process opens the same new file at the same
    moment (two API servers starting on one home): so try again a few times, briefly."""
    for attempt in range(attempts):
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.02 * (attempt + 1))


def _write_lock(path: str) -> _WriteLock:
    with _WRITE_LOCKS_GUARD:
        return _WRITE_LOCKS.setdefault(os.path.abspath(path), _WriteLock(os.path.abspath(path)))


def _event_row(e: Event, now: float) -> tuple:
    context = json.dumps(dict(e.context), separators=(",", ":")) if e.context else None
    return (e.event_id, e.user_id, e.device_id, e.type, e.item_id, e.query, e.timestamp, e.session_id, context, now)


def _entry(row: tuple) -> LogEntry:
    seq, event_id, user_id, device_id, etype, item_id, query, ts, session_id, context = row
    ctx = tuple(sorted(json.loads(context).items())) if context else ()
    return LogEntry(seq, Event(event_id, user_id, device_id, etype, ts, item_id, query, session_id, ctx))


def _record(row: tuple) -> UserRecord:
    s, w, n, updated_at, last_pos, recent = row
    # Read-only views of the row's bytes, no copies: a fold replaces the arrays, never writes into them.
    return UserRecord(UserState(np.frombuffer(s, dtype=np.float32), w, n), last_pos, unpack_recent(recent),
                      updated_at)


def _user_row(user_id: str, r: UserRecord) -> tuple:
    return (user_id, np.asarray(r.state.s, dtype="<f4").tobytes(), float(r.state.w), int(r.state.n_events),
            r.updated_at, int(r.last_pos), pack_recent(r.recent))


class SQLiteStore(Store):
    """One SQLite file. Thread-safe: each thread gets its own connection."""

    backend = "sqlite"
    serial_writes = True

    def __init__(self, path: Path | str, synchronous: str = "full"):
        if synchronous not in ("full", "normal"):
            raise ValueError(f"synchronous must be full or normal, not {synchronous!r}")
        self.path = str(path)
        self.synchronous = synchronous
        self._local = threading.local()
        self._lock = _write_lock(self.path)
        self._checkpoints = checkpointer(self.path, self._lock)
        with self._lock:
            self._migrate_layout()
            self.db.executescript(SCHEMA)  # executescript manages its own transaction
            for table, column, decl in MIGRATIONS:
                have = {r[1] for r in self.db.execute(f"PRAGMA table_info({table})")}
                if column not in have:
                    self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
            self.db.executescript(_SKU_INDEX)

    def _migrate_layout(self) -> None:
        """Stores made before the real-time updater: user_state becomes a clustered
        (WITHOUT ROWID) table, one page write per user instead of two, and the
        per-user events index gives way to the updater's `consumed` table."""
        sql = self.db.execute("SELECT sql FROM sqlite_master WHERE name = 'user_state'").fetchone()
        if sql is None or "WITHOUT ROWID" in sql[0]:
            return
        # Position 0: the updater refolds the whole log, which rebuilds every state and counter.
        self.db.executescript("DROP TABLE user_state; DROP INDEX IF EXISTS events_user; "
                              "DROP TABLE IF EXISTS item_stats; "
                              f"DELETE FROM meta WHERE key = '{POSITION}';")

    @property
    def db(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            enable_wal(conn)
            conn.execute(f"PRAGMA synchronous={self.synchronous.upper()}")
            conn.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer thread does it, off the request path
            conn.execute(f"PRAGMA journal_size_limit={64 << 20}")  # a restarted WAL is cut back to 64 MiB
            # Reads of user records (random rows of a large table) come from the OS page cache through
            # the mapping, shared by every connection and worker, instead of each connection's own copy.
            conn.execute(f"PRAGMA mmap_size={1 << 30}")
            self._local.conn = conn
        return conn

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception; nests as a no-op."""
        if getattr(self._local, "in_tx", False):
            yield self.db
            return
        with self._lock:
            db = self.db
            db.execute("BEGIN IMMEDIATE")
            self._local.in_tx = True
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            else:
                db.execute("COMMIT")
                self._checkpoints.committed()
            finally:
                self._local.in_tx = False
                self._local.appended = None

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
        if db is not None:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))
            return
        with self.tx() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # --- catalogue ---

    def put_items(self, items: Iterable[Item], vectors: dict[int, np.ndarray] | None = None,
                  provisional: Iterable[int] = ()) -> list[Item]:
        vectors, provisional = vectors or {}, set(provisional)
        items = list(items)
        with self.tx() as db:
            items = self._assign(db, items)
            rows = [(it.item_id, it.title, it.category, json.dumps(list(it.categories)), it.year, it.price,
                     int(it.in_stock),
                     vectors[it.item_id].astype("<f4").tobytes() if it.item_id in vectors else None,
                     int(it.item_id in provisional), it.external_id, it.currency,
                     json.dumps(dict(it.attributes)) if it.attributes else None, it.created_at) for it in items]
            db.executemany(_UPSERT_ITEM, rows)
            db.execute("INSERT INTO meta VALUES ('catalogue_version', '1') ON CONFLICT(key) DO UPDATE "
                       "SET value = CAST(value AS INTEGER) + 1")
        return items

    def _assign(self, db: sqlite3.Connection, items: list[Item]) -> list[Item]:
        """Items without an index get their product id's index, or the next free one (under the write lock)."""
        items = [it if it.sku or not it.item_id else replace(it, sku=str(it.item_id)) for it in items]
        todo = [it.sku for it in items if not it.item_id]
        if not todo:
            return items
        known = self._item_index(db, todo)
        top = max([db.execute("SELECT COALESCE(MAX(item_id), 0) FROM items").fetchone()[0]]
                  + [it.item_id for it in items if it.item_id])  # explicit indexes of this batch are taken too
        out = []
        for it in items:
            if not it.item_id:
                if it.sku not in known:
                    top += 1
                    known[it.sku] = top
                it = replace(it, item_id=known[it.sku])
            out.append(it)
        return out

    def item_index(self, skus: Iterable[str]) -> dict[str, int]:
        return self._item_index(self.db, list(skus))

    @staticmethod
    def _item_index(db: sqlite3.Connection, skus: list[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        uniq = list(dict.fromkeys(skus))
        for i in range(0, len(uniq), 500):
            chunk = uniq[i:i + 500]
            out.update(db.execute(f"SELECT sku, item_id FROM items WHERE sku IN ({','.join('?' * len(chunk))})",
                                  chunk).fetchall())
        return out

    _ITEM_COLUMNS = "item_id, title, category, year, price, in_stock, categories, sku, currency, attributes, created_at"

    @staticmethod
    def _item(r: tuple) -> Item:
        return Item(r[0], r[1], r[2], r[3], r[4], bool(r[5]), tuple(json.loads(r[6])), r[7] or "", r[8] or "",
                    tuple(sorted(json.loads(r[9]).items())) if r[9] else (), r[10])

    def items(self) -> list[Item]:
        rows = self.db.execute(f"SELECT {self._ITEM_COLUMNS} FROM items ORDER BY item_id")
        return [self._item(r) for r in rows]

    def get_items(self, item_ids: Iterable[int]) -> dict[int, Item]:
        ids = sorted(set(item_ids))
        out: dict[int, Item] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            rows = self.db.execute(f"SELECT {self._ITEM_COLUMNS} FROM items WHERE item_id IN "
                                   f"({','.join('?' * len(chunk))})", chunk)
            out.update((r[0], self._item(r)) for r in rows)
        return out

    def item_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        rows = self.db.execute("SELECT item_id, vector FROM items WHERE vector IS NOT NULL ORDER BY item_id").fetchall()
        if not rows:
            return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        return ids, np.stack([np.frombuffer(r[1], dtype="<f4") for r in rows]).astype(np.float32)

    def provisional_items(self) -> set[int]:
        return {r[0] for r in self.db.execute("SELECT item_id FROM items WHERE provisional = 1")}

    # --- event log ---

    def append_events(self, events: list[Event]) -> list[bool]:
        if not events:
            return []
        now = time.time()
        with self.tx() as db:
            ids = [e.event_id for e in events]
            seen: set[str] = set()
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                seen.update(r[0] for r in db.execute(
                    f"SELECT event_id FROM events WHERE event_id IN ({','.join('?' * len(chunk))})", chunk))
            out, rows, fresh = [], [], []
            for e in events:
                new = e.event_id not in seen
                seen.add(e.event_id)  # a repeat inside the same batch is a duplicate too
                out.append(new)
                if new:
                    rows.append(_event_row(e, now))
                    fresh.append(e)
            before = db.total_changes
            db.executemany(_INSERT_EVENT, rows)
            if rows and db.total_changes - before == len(rows):
                # Under the write lock the new rows got consecutive positions ending at the last
                # rowid: an updater step in this same transaction takes them from here instead of
                # reading back and re-parsing what it was just handed (claim_events).
                last = db.execute("SELECT last_insert_rowid()").fetchone()[0]
                self._local.appended = [LogEntry(last - len(fresh) + 1 + k, e) for k, e in enumerate(fresh)]
        return out

    def conflicting(self, events: list[Event]) -> list[bool]:
        width = len(EVENT_COLUMNS.split(","))
        logged: dict[str, tuple] = {}
        ids = list({e.event_id for e in events})
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            logged.update((row[0], tuple(row)) for row in self.db.execute(
                f"SELECT {EVENT_COLUMNS} FROM events WHERE event_id IN ({','.join('?' * len(chunk))})", chunk))
        return [e.event_id in logged and logged[e.event_id] != _event_row(e, 0.0)[:width] for e in events]

    def import_events(self, events: Iterable[Event]) -> int:
        now = time.time()
        with self.tx() as db:
            before = db.total_changes
            db.executemany(_INSERT_EVENT, (_event_row(e, now) for e in events))
            return db.total_changes - before

    def import_event_columns(self, event_id: list, user_id: list, device_id: list, type: list, item_id: list,
                             query: list, timestamp: list, session_id: list) -> int:
        rows = zip(event_id, user_id, device_id, type, item_id, query, timestamp, session_id, repeat(None),
                   repeat(time.time()))
        with self.tx() as db:
            before = db.total_changes
            db.executemany(_INSERT_EVENT, rows)
            return db.total_changes - before

    def log_head(self) -> int:
        return int(self.db.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0])

    def count_events(self, event_ids: list[str] | None = None) -> int:
        if event_ids is None:
            return self.db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        marks = ",".join("?" * len(event_ids))
        return self.db.execute(f"SELECT COUNT(*) FROM events WHERE event_id IN ({marks})", event_ids).fetchone()[0]

    def interactions(self, types: tuple[str, ...], since: float | None = None, until: float | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        sql = (f"SELECT user_id, item_id, timestamp, type FROM events WHERE item_id IS NOT NULL AND type IN "
               f"({','.join('?' * len(types))}) AND timestamp >= ? AND timestamp < ? ORDER BY timestamp, seq")
        rows = self.db.execute(sql, (*types, -1.0 if since is None else since, 1e18 if until is None else until))
        users, items, ts, codes = [], [], [], []
        for chunk in iter(lambda: rows.fetchmany(100_000), []):
            u, i, t, k = zip(*chunk)
            users.append(np.array(u, dtype=object))
            items.append(np.array(i, dtype=np.int64))
            ts.append(np.array(t, dtype=np.float64))
            codes.append(np.array([TYPE_CODE[x] for x in k], dtype=np.int8))
        if not items:
            return (np.zeros(0, dtype=object), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64),
                    np.zeros(0, dtype=np.int8))
        return np.concatenate(users), np.concatenate(items), np.concatenate(ts), np.concatenate(codes)

    def iter_log(self, after: int = 0) -> Iterator[LogEntry]:
        for batch in log_batches():
            rows = self.db.execute(f"SELECT seq, {EVENT_COLUMNS} FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                                   (after, batch)).fetchall()
            if not rows:
                return
            for r in rows:
                yield _entry(r)
            after = rows[-1][0]

    # --- the updater's consumer position ---

    def ingest_tx(self):
        return self.tx()

    @contextmanager
    def savepoint(self):
        db = self.db
        db.execute("SAVEPOINT fold")
        try:
            yield
        except BaseException:
            db.execute("ROLLBACK TO fold")
            db.execute("RELEASE fold")
            raise
        db.execute("RELEASE fold")

    def updater_step(self):
        # The write transaction is the lock: it spans claim and commit, so a
        # second updater (another worker or process) waits and then sees the
        # advanced position. Per step, not per drain, so ingestion gets turns.
        return self.tx()

    def _position(self) -> int:
        return int(self.get_meta(POSITION, "0") or 0)

    def claim_events(self, limit: int, block: float = 0.0) -> list[LogEntry]:
        position = self._position()
        fresh, self._local.appended = getattr(self._local, "appended", None), None
        if fresh and fresh[0].pos == position + 1 and len(fresh) <= limit:
            # This transaction appended them and holds the write lock: they are exactly what is
            # pending (nothing before them, nothing after).
            return fresh
        rows = self.db.execute(f"SELECT seq, {EVENT_COLUMNS} FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                               (position, limit)).fetchall()
        return [_entry(r) for r in rows]

    def commit_updates(self, updates: Updates, entries: list[LogEntry]) -> None:
        with self.tx() as db:
            db.executemany(_UPSERT_USER, [_user_row(u, r) for u, r in updates.records.items()])
            db.executemany(_INSERT_CONSUMED, [(u, i) for u, items in updates.consumed.items() for i in items])
            self._bump_stats(db, updates.popularity, "popularity")
            self._bump_stats(db, updates.exposures, "exposures")
            if entries:
                self.set_meta(POSITION, str(entries[-1].pos), db)

    @staticmethod
    def _bump_stats(db: sqlite3.Connection, counts: dict[int, int], column: str) -> None:
        db.executemany(f"INSERT INTO item_stats (item_id, {column}) VALUES (?, ?) ON CONFLICT(item_id) "
                       f"DO UPDATE SET {column} = {column} + excluded.{column}", list(counts.items()))

    def pending_count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM events WHERE seq > ?", (self._position(),)).fetchone()[0]

    _HAS_PENDING = ("SELECT EXISTS(SELECT 1 FROM events WHERE seq > COALESCE("
                    f"(SELECT CAST(value AS INTEGER) FROM meta WHERE key = '{POSITION}'), 0))")

    def wait_for_events(self, timeout: float) -> bool:
        # SQLite has no cross-process notification; a 2 ms poll of an indexed
        # lookup costs little and keeps event-to-embedding latency low.
        deadline = time.monotonic() + timeout
        while True:
            if self.db.execute(self._HAS_PENDING).fetchone()[0]:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.002)

    # --- users ---

    def user_records(self, user_ids: Iterable[str], dim: int) -> dict[str, UserRecord]:
        ids = list(dict.fromkeys(user_ids))
        found: dict[str, UserRecord] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            rows = self.db.execute("SELECT user_id, s, w, n_events, updated_at, last_pos, recent FROM user_state "
                                   f"WHERE user_id IN ({','.join('?' * len(chunk))})", chunk)
            found.update((r[0], _record(r[1:])) for r in rows)
        return {u: found.get(u) or UserRecord.empty(dim) for u in ids}

    def has_user(self, user_id: str) -> bool:
        return self.db.execute("SELECT 1 FROM user_state WHERE user_id = ?", (user_id,)).fetchone() is not None

    def put_user_records(self, records: dict[str, UserRecord]) -> None:
        with self.tx() as db:
            db.executemany(_UPSERT_USER, [_user_row(u, r) for u, r in records.items()])

    def user_ids(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT user_id FROM user_state ORDER BY user_id")]

    def consumed_items(self, user_id: str) -> set[int]:
        return {r[0] for r in self.db.execute("SELECT item_id FROM consumed WHERE user_id = ?", (user_id,))}

    def user_context(self, user_id: str, dim: int) -> UserContext:
        return UserContext(self.user_records([user_id], dim)[user_id], self.consumed_items(user_id),
                           self.features(user_id))

    def reset_derived(self, records: dict[str, UserRecord], consumed: dict[str, set[int]],
                      popularity: dict[int, int], position: int) -> None:
        with self.tx() as db:
            db.execute("DELETE FROM user_state")
            db.executemany(_UPSERT_USER, [_user_row(u, r) for u, r in records.items()])
            db.execute("DELETE FROM consumed")
            db.executemany(_INSERT_CONSUMED, [(u, i) for u, items in consumed.items() for i in items])
            db.execute("UPDATE item_stats SET popularity = 0")
            self._bump_stats(db, popularity, "popularity")
            self.set_meta(POSITION, str(position), db)

    # --- item stats, window features ---

    def item_counts(self) -> dict[int, int]:
        return dict(self.db.execute("SELECT item_id, popularity FROM item_stats WHERE popularity > 0").fetchall())

    def exposures(self) -> dict[int, int]:
        return dict(self.db.execute("SELECT item_id, exposures FROM item_stats WHERE exposures > 0").fetchall())

    def set_exposures(self, counts: dict[int, int]) -> None:
        with self.tx() as db:
            db.execute("UPDATE item_stats SET exposures = 0")
            self._bump_stats(db, counts, "exposures")

    def put_profiles(self, profiles: dict[str, dict[str, str]]) -> None:
        with self.tx() as db:
            db.executemany("INSERT OR REPLACE INTO user_profiles VALUES (?, ?)",
                           ((u, json.dumps(p, sort_keys=True)) for u, p in profiles.items()))

    def profiles(self) -> dict[str, dict[str, str]]:
        return {u: json.loads(d) for u, d in self.db.execute("SELECT user_id, data FROM user_profiles")}

    def put_features(self, features: dict[str, dict]) -> None:
        with self.tx() as db:
            db.execute("DELETE FROM user_features")
            db.executemany("INSERT INTO user_features VALUES (?, ?)",
                           [(u, json.dumps(f, separators=(",", ":"))) for u, f in features.items()])

    def features(self, user_id: str) -> dict | None:
        row = self.db.execute("SELECT data FROM user_features WHERE user_id = ?", (user_id,)).fetchone()
        return json.loads(row[0]) if row else None

    # --- bundle records ---

    def put_records(self, version: int, changed: dict[str, RecordRow], sigs: dict[str, bytes]) -> None:
        with self.tx() as db:
            db.executemany("INSERT OR REPLACE INTO record_log VALUES (?, ?, ?, ?, ?)",
                           [(u, r.version, r.blob, r.sha256, r.sig) for u, r in changed.items()])
            db.executemany("INSERT OR REPLACE INTO record_sigs VALUES (?, ?, ?)",
                           [(version, u, s) for u, s in sigs.items()])
            # Sync answers are cached per epoch (server/bundle/sync_answer.py): any write to the log starts a new one.
            self.set_meta(RECORDS_EPOCH, os.urandom(8).hex(), db)

    def records_at(self, version: int, user_ids: list[str]) -> dict[str, RecordRow]:
        out = {}
        for u in user_ids:  # one primary-key seek each: (user_id, version DESC)
            row = self.db.execute("SELECT version, blob, sha256, sig FROM record_log WHERE user_id = ? AND "
                                  "version <= ? ORDER BY version DESC LIMIT 1", (u, version)).fetchone()
            if row is not None:
                out[u] = RecordRow(row[0], bytes(row[1]), bytes(row[2]), bytes(row[3]))
        return out

    def record_sigs(self, version: int, user_ids: list[str]) -> dict[str, bytes]:
        if not user_ids:
            return {}
        marks = ",".join("?" * len(user_ids))
        rows = self.db.execute(f"SELECT user_id, sig FROM record_sigs WHERE version = ? AND user_id IN ({marks})",
                               (version, *user_ids)).fetchall()
        return {u: bytes(s) for u, s in rows}

    def record_heads(self) -> dict[str, bytes]:
        # SQLite takes the bare column (sha256) from the row that holds MAX(version).
        rows = self.db.execute("SELECT user_id, sha256, MAX(version) FROM record_log GROUP BY user_id").fetchall()
        return {u: bytes(s) for u, s, _ in rows}

    def compact_records(self, keep_from: int) -> int:
        with self.tx() as db:
            db.execute("DELETE FROM record_sigs WHERE version < ?", (keep_from,))
            cur = db.execute("DELETE FROM record_log AS r WHERE version < ? AND EXISTS (SELECT 1 FROM record_log n "
                             "WHERE n.user_id = r.user_id AND n.version > r.version AND n.version <= ?)",
                             (keep_from, keep_from))
            return cur.rowcount
