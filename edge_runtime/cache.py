"""The device's SQLite cache: the connection, its transactions, and every read the SDK makes.

WAL mode, and two connections: every read goes through its own query-only
connection, so a rerank never waits for a writer (a sync's transaction), and
sees only committed data. Writes go through `tx()` on the other connection:
BEGIN IMMEDIATE ... COMMIT, rolled back on any error, with the
storage errors SQLite reports (disk full, I/O, read-only, corrupt) raised as
StorageError. Durability: with WAL and synchronous=NORMAL a commit survives the
app being killed at any point, and the database survives power loss intact but
may lose the last commits; `tx(durable=True)` (and durability="power") also
fsyncs the WAL, so the commit survives power loss too.
"""

from __future__ import annotations

import builtins
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import sqlite_utils

from shared.features import UserState

from . import schema
from .artifacts import ArtifactFiles
from .errors import StorageError
from .packed import Candidates

DURABILITY = ("crash", "power")
# SQLite result codes that mean the storage, not the statement, is at fault.
STORAGE_CODES = ("SQLITE_FULL", "SQLITE_IOERR", "SQLITE_READONLY", "SQLITE_CORRUPT", "SQLITE_NOTADB",
                 "SQLITE_CANTOPEN", "SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_PERM")


def storage_error(exc: sqlite3.Error, what: str) -> Exception:
    """StorageError for storage failures; the original error for anything else (a bug)."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    if not name.startswith(STORAGE_CODES):
        return exc
    hint = ("the device is out of space: free some, then retry" if name == "SQLITE_FULL"
            else "another process holds the database: retry" if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED"))
            else "the database may be damaged: delete it and sync again if this persists")
    return StorageError(f"{what} failed: {exc} ({name}); {hint}")


@dataclass
class Snapshot:
    """What one bundle version says, read once per version instead of on every rerank."""

    version: int
    manifest: dict = field(default_factory=dict)
    categories: list[str] = field(default_factory=list)
    popular: list[int] = field(default_factory=list)
    synced_at: float | None = None
    ranker_sha: str | None = None
    # (version, model) it was read at: two variants of one version (docs/sync-protocol.md, "Canary variants")
    # differ in model, so a switch by another process (the CLI) is seen too.
    key: tuple = ()

    @property
    def dim(self) -> int | None:
        return int(self.manifest["embedding_dim"]) if self.manifest else None

    @property
    def model_version(self) -> str | None:
        return self.manifest.get("model_version")


class Checkpointer:
    """Copies the WAL into the database from a thread of its own.

    SQLite's automatic checkpoint runs inside whichever commit crosses its
    threshold, and with it that commit waits for the database file's fsync:
    several milliseconds on a phone's flash, every few hundred track() calls.
    Here the app's thread only counts its commits and wakes this thread, whose
    PASSIVE checkpoint blocks neither readers nor writers. The automatic
    checkpoint stays on at a high threshold, should this thread fall behind.
    """

    EVERY = 100  # commits between checkpoints
    FALLBACK_PAGES = 10_000  # ~40 MB of WAL

    def __init__(self, path: Path):
        self.path = path
        self.commits = 0
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="pocketrank-checkpoint", daemon=True)
        self._thread.start()

    def committed(self, now: bool = False) -> None:
        self.commits += 1
        if now or self.commits >= self.EVERY:
            self.commits = 0
            self._wake.set()

    def _run(self) -> None:
        conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=5.0)
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stopping:
                    return
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error:
                    pass  # busy or failing storage: the next wake, or the automatic one, tries again
        finally:
            conn.close()

    def close(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout=10)


class DeviceCache:
    def __init__(self, path: Path | str, durability: str = "crash"):
        if durability not in DURABILITY:
            raise ValueError(f"durability must be one of {DURABILITY}")
        self.path = Path(path)
        self.durability = durability
        self.files = ArtifactFiles(f"{self.path}-artifacts")
        self.lock = threading.RLock()
        try:
            conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=5.0)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={'FULL' if durability == 'power' else 'NORMAL'}")
            conn.execute(f"PRAGMA wal_autocheckpoint={Checkpointer.FALLBACK_PAGES}")
            self.db = sqlite_utils.Database(conn)
            self.schema_version = schema.migrate(conn, self.files)
        except sqlite3.Error as exc:
            raise storage_error(exc, f"opening {self.path}") from exc
        self._snapshot: Snapshot | None = None
        self._reader = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=5.0)
        self._reader.execute("PRAGMA query_only = 1")
        self._read_lock = threading.Lock()
        self.checkpointer = Checkpointer(self.path)

    @property
    def conn(self) -> sqlite3.Connection:
        return self.db.conn

    @contextmanager
    def tx(self, durable: bool = False, large: bool = False) -> Iterator[sqlite3.Connection]:
        """One write transaction; `durable` fsyncs its commit whatever the configured durability;
        `large` (a sync) has the WAL checkpointed right after, not some commits later."""
        conn = self.conn
        with self.lock:
            sync_now = durable and self.durability != "power"
            try:
                if sync_now:
                    conn.execute("PRAGMA synchronous=FULL")
                conn.execute("BEGIN IMMEDIATE")
                yield conn
                conn.execute("COMMIT")
                self.checkpointer.committed(now=large)
            except sqlite3.Error as exc:
                # SQLite rolls some errors (SQLITE_FULL among them) back by itself.
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise storage_error(exc, "a write to the device database") from exc
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            finally:
                if sync_now:
                    conn.execute("PRAGMA synchronous=NORMAL")

    def query(self, sql: str, params: tuple | list = ()) -> list[tuple]:
        """Rows of a read, from committed data, without waiting for a write in progress."""
        with self._read_lock:
            return self._reader.execute(sql, params).fetchall()

    def query_one(self, sql: str, params: tuple | list = ()) -> tuple | None:
        with self._read_lock:
            return self._reader.execute(sql, params).fetchone()

    def invalidate(self) -> None:
        self._snapshot = None

    # --- meta and the bundle snapshot ---

    def get(self, key: str, default: str | None = None) -> str | None:
        row = self.query_one("SELECT value FROM meta WHERE key = ?", (key,))
        return row[0] if row else default

    def set(self, key: str, value: str) -> None:
        with self.tx() as conn:
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    @property
    def version(self) -> int:
        value = self.get("bundle_version", "0")
        assert value is not None  # a default was given
        return int(value)

    def manifest(self) -> dict | None:
        return self.snapshot().manifest or None

    def snapshot(self) -> Snapshot:
        """The held bundle's manifest and derived facts; reloaded when the held version changes,
        also when another process (the CLI) synced the same database, or switched it to another variant."""
        held = dict(self.query("SELECT key, value FROM meta WHERE key IN ('bundle_version', 'bundle_model')"))
        version = int(held.get("bundle_version") or 0)
        key = (version, held.get("bundle_model"))
        snap = self._snapshot
        if snap is not None and snap.key == key:
            return snap
        meta = dict(self.query(
            "SELECT key, value FROM meta WHERE key IN ('manifest', 'categories', 'popular', 'synced_at')"))
        row = self.query_one("SELECT sha256 FROM artifacts WHERE name = 'ranker'")
        snap = Snapshot(version, json.loads(meta.get("manifest") or "{}"), json.loads(meta.get("categories") or "[]"),
                        json.loads(meta.get("popular") or "[]"),
                        float(meta["synced_at"]) if meta.get("synced_at") else None, row[0] if row else None, key)
        self._snapshot = snap
        return snap

    # --- reads used by the local rerank ---

    def packed(self, user_id: str) -> Candidates | None:
        row = self.query_one("SELECT ids, scores, vectors, stock, cats, version, received_at FROM candidates "
                             "WHERE user_id = ?", (user_id,))
        return Candidates.from_row(row) if row else None

    def candidates(self, user_id: str) -> tuple[bytes, int, float] | None:
        """The user's candidate record: (zstd frame of the PRC2 record, version it is confirmed at, received_at).

        The frame is the server's, or a local recompression of a record rebuilt from a delta: the
        record signature covers the uncompressed record, so both verify alike."""
        row = self.query_one("SELECT blob, version, received_at FROM candidates WHERE user_id = ?", (user_id,))
        return (row[0], row[1], row[2]) if row else None

    def user_state(self, user_id: str, dim: int | None = None) -> UserState | None:
        row = self.query_one("SELECT s, w, n_events FROM user_state WHERE user_id = ?", (user_id,))
        if row is None:
            return None
        return UserState(np.frombuffer(row[0], dtype="<f4").astype(np.float32), row[1], row[2])

    def put_state(self, user_id: str, state: UserState, conn: sqlite3.Connection | None = None) -> None:
        if conn is None:
            with self.tx() as conn:
                return self.put_state(user_id, state, conn)
        conn.execute("INSERT OR REPLACE INTO user_state (user_id, s, w, n_events, updated_at) VALUES (?, ?, ?, ?, ?)",
                     (user_id, np.asarray(state.s, dtype="<f4").tobytes(), float(state.w), state.n_events,
                      time.time()))

    def consumed(self, user_id: str) -> builtins.set[str]:
        """The products (their own ids) this user clicked, carted or bought on the device."""
        return {r[0] for r in self.query("SELECT item_id FROM consumed WHERE user_id = ?", (user_id,))}

    def consumed_indexes(self, user_id: str) -> builtins.set[int]:
        """The indexes of the held items this user consumed: what the local rules leave out."""
        return {r[0] for r in self.query("SELECT i.item_id FROM consumed c JOIN items i ON i.external_id = c.item_id "
                                         "WHERE c.user_id = ?", (user_id,))}

    def vector(self, item_id: int) -> np.ndarray | None:
        row = self.query_one("SELECT vector FROM items WHERE item_id = ?", (item_id,))
        return np.frombuffer(row[0], dtype="<f4") if row else None

    def vectors(self, item_ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """(ids found, their vectors), in the order asked."""
        rows: dict[int, bytes] = {}
        for i in range(0, len(item_ids), 500):
            part = item_ids[i : i + 500]
            rows.update(self.query(f"SELECT item_id, vector FROM items WHERE item_id IN ({','.join('?' * len(part))})",
                                   part))
        found = [i for i in item_ids if i in rows]
        if not found:
            return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
        return np.array(found, dtype=np.int64), np.frombuffer(b"".join(rows[i] for i in found),
                                                              dtype="<f4").reshape(len(found), -1)

    def item_meta(self, item_ids: list[int]) -> dict[int, dict]:
        """Held items by index: {index: {external_id, title, category, price, in_stock}}."""
        rows: list[tuple] = []
        for i in range(0, len(item_ids), 500):
            part = list(item_ids[i : i + 500])
            rows += self.query(f"SELECT item_id, external_id, title, category, price, in_stock FROM items "
                               f"WHERE item_id IN ({','.join('?' * len(part))})", part)
        return {r[0]: {"external_id": r[1], "title": r[2], "category": r[3], "price": r[4], "in_stock": bool(r[5])}
                for r in rows}

    def products(self, external_ids: list[str]) -> dict[str, dict]:
        """Held items by the product's own id: {external_id: {item_index, title, category, price, in_stock}}.
        A product the device holds no entry for is left out."""
        rows: list[tuple] = []
        ids = [str(i) for i in external_ids]
        for i in range(0, len(ids), 500):
            part = ids[i : i + 500]
            rows += self.query(f"SELECT external_id, item_id, title, category, price, in_stock FROM items "
                               f"WHERE external_id IN ({','.join('?' * len(part))})", part)
        return {r[0]: {"item_index": r[1], "title": r[2], "category": r[3], "price": r[4], "in_stock": bool(r[5])}
                for r in rows}

    def indexes(self, external_ids: list[str]) -> dict[str, int]:
        """{external id: index} of the held products among `external_ids`."""
        return {e: m["item_index"] for e, m in self.products(external_ids).items()}

    def titles(self) -> dict[str, str]:
        """The held products' titles by their own ids (offline search)."""
        return dict(self.query("SELECT external_id, title FROM items"))

    def popular(self) -> list[int]:
        return self.snapshot().popular

    def artifact(self, name: str) -> tuple[str, bytes] | None:
        """(sha256, bytes) of a held artifact; IntegrityError if its file is missing or damaged."""
        row = self.query_one("SELECT sha256 FROM artifacts WHERE name = ?", (name,))
        return (row[0], self.files.read(row[0])) if row else None

    def artifact_shas(self) -> dict[str, str]:
        return dict(self.query("SELECT name, sha256 FROM artifacts"))

    def users(self) -> list[str]:
        rows = self.query("SELECT user_id FROM user_state UNION SELECT user_id FROM candidates")
        return sorted(r[0] for r in rows)

    def close(self) -> None:
        self.checkpointer.close()
        with self._read_lock:
            self._reader.close()
        with self.lock:
            self.conn.close()
