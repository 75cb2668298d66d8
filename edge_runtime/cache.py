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
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import sqlite_utils

from pocketrank.shared.features import UserState

from . import schema
from .artifacts import ArtifactFiles
from .errors import STORAGE_CODES, StorageError
from .packed import Candidates, repack
from .rowsum import note_damage, packed_sum, state_sum

DURABILITY = ("crash", "power")


def storage_state(path: Path) -> str | None:
    """"read-only" or "full" when the file system holding `path` is (statvfs); None otherwise or when unknown."""
    try:
        st = os.statvfs(path.parent if not path.exists() else path)
    except (OSError, AttributeError):
        return None
    if st.f_flag & getattr(os, "ST_RDONLY", 1):
        return "read-only"
    return "full" if st.f_bavail * st.f_frsize < 64 << 10 else None


def queued_events(path: Path) -> int | None:
    """How many events the database at `path` holds for upload, read without writing anything; None if unreadable.

    On read-only storage a WAL database whose -shm file is gone cannot be opened even read-only; then it
    is read as immutable (the main file alone: after a clean close, the WAL is in it)."""
    for query in ("mode=ro", "mode=ro&immutable=1"):
        try:
            conn = sqlite3.connect(f"{path.resolve().as_uri()}?{query}", uri=True, timeout=1.0)
            try:
                return int(conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
            finally:
                conn.close()
        except (sqlite3.Error, OSError, ValueError):
            continue
    return None


def storage_error(exc: sqlite3.Error, what: str, path: Path | None = None) -> Exception:
    """StorageError for storage failures, saying what is wrong; the original error for anything else (a bug).

    Never advises deleting the database: it may hold events not yet uploaded, and what
    fails is usually the storage (read-only, full), which deleting would not fix.
    """
    name = getattr(exc, "sqlite_errorname", "") or ""
    if not name.startswith(STORAGE_CODES):
        return exc
    fs = storage_state(path) if path is not None else None
    if name == "SQLITE_FULL" or fs == "full":
        hint = ("the device's storage is full: free some space, then retry; nothing already stored is lost "
                "(queued events stay queued)")
    elif name.startswith(("SQLITE_READONLY", "SQLITE_PERM", "SQLITE_CANTOPEN")) or fs == "read-only":
        hint = ("the device's storage is read-only" if fs == "read-only" else
                "the app may not write the database or its folder (read-only storage, permissions)")
        hint += ": nothing was written, and what the database holds (queued events too) is kept; retry once " \
                "it is writable"
    elif name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        hint = "another process holds the database: retry"
    elif name.startswith("SQLITE_IOERR"):
        hint = "the storage reported an I/O error: retry; if it persists, the storage is failing"
    else:  # SQLITE_CORRUPT, SQLITE_NOTADB
        hint = ("the database file is damaged. Do not delete it: copy it aside first, it may hold events not yet "
                "uploaded")
    queued = queued_events(path) if path is not None and name != "SQLITE_FULL" else None
    if queued:
        hint += f" (it holds {queued} queued events)"
    return StorageError(f"{what} failed: {exc} ({name}); {hint}")


def _retry_busy(conn: sqlite3.Connection, sql: str, timeout: float = 5.0) -> list:
    """Run `sql`, retrying while another connection holds the lock it needs (switching to WAL
    returns SQLITE_BUSY at once, without waiting in SQLite's busy handler)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return conn.execute(sql).fetchall()
        except sqlite3.OperationalError as exc:
            busy = (getattr(exc, "sqlite_errorname", "") or "").startswith(("SQLITE_BUSY", "SQLITE_LOCKED"))
            if not busy or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _packed_ok(user_id: str, row: tuple) -> bool:
    try:
        return row[7] is not None and row[7] == packed_sum(user_id, *row[:5])
    except TypeError:  # a column of the wrong type: damaged as well
        return False


def state_ok(user_id: str, row: tuple) -> bool:
    """Whether a (s, w, n_events, checksum) row matches its checksum."""
    try:
        return row[3] is not None and row[3] == state_sum(user_id, row[0], row[1], row[2])
    except (TypeError, ValueError):
        return False


def drop_damaged_state(conn: sqlite3.Connection, user_id: str) -> None:
    """Inside the caller's transaction: drop a damaged state, and have the next sync fetch the user whole (its
    answer carries the server's live state, onto which the pending events are folded again)."""
    note_damage(conn, "state", user_id, "user state does not match its checksum; dropped, fetched at the next sync",
                time.time())
    conn.execute("DELETE FROM user_state WHERE user_id = ?", (user_id,))
    conn.execute("UPDATE candidates SET version = 0 WHERE user_id = ?", (user_id,))


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
        self.last_storage_error: str | None = None  # the last write the storage refused, until one succeeds
        try:
            conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=5.0)
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                _retry_busy(conn, "PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={'FULL' if durability == 'power' else 'NORMAL'}")
            conn.execute(f"PRAGMA wal_autocheckpoint={Checkpointer.FALLBACK_PAGES}")
            self.db = sqlite_utils.Database(conn)
            self.schema_version = schema.migrate(conn, self.files)
        except sqlite3.Error as exc:
            raise storage_error(exc, f"opening {self.path}", self.path) from exc
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
                self.last_storage_error = None
                self.checkpointer.committed(now=large)
            except sqlite3.Error as exc:
                # SQLite rolls some errors (SQLITE_FULL among them) back by itself.
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                err = storage_error(exc, "a write to the device database", self.path)
                if isinstance(err, StorageError):
                    self.last_storage_error = str(err)
                raise err from exc
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

    def clock_offset(self) -> float | None:
        """The server's clock minus this device's, in seconds, as the last upload measured it; None before any."""
        try:
            return float(json.loads(self.get("server_clock") or "null")["offset"])
        except (TypeError, ValueError, KeyError):
            return None

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
        """The user's packed candidates, checked against their checksum. A damaged row is rebuilt from the held
        record; if that is damaged too, it is marked to be fetched whole at the next sync and None is returned
        (the caller answers without it): a damaged row is never reranked."""
        row = self.query_one("SELECT ids, scores, vectors, stock, cats, version, received_at, checksum FROM candidates "
                             "WHERE user_id = ?", (user_id,))
        if row is None:
            return None
        if _packed_ok(user_id, row):
            return Candidates.from_row(row[:7])
        with self.tx() as conn:
            note_damage(conn, "candidates", user_id, "packed row does not match its checksum; rebuilt from the "
                        "held record", time.time())
            if repack(conn, [user_id], skip_damaged=True):
                note_damage(conn, "candidates", user_id, "held record damaged too; fetched whole at the next sync",
                            time.time())
        row = self.query_one("SELECT ids, scores, vectors, stock, cats, version, received_at, checksum FROM candidates "
                             "WHERE user_id = ?", (user_id,))
        if row is None or not row[0] or not _packed_ok(user_id, row):
            return None
        return Candidates.from_row(row[:7])

    def candidates(self, user_id: str) -> tuple[bytes, int, float] | None:
        """The user's candidate record: (zstd frame of the PRC2 record, version it is confirmed at, received_at).

        The frame is the server's, or a local recompression of a record rebuilt from a delta: the
        record signature covers the uncompressed record, so both verify alike."""
        row = self.query_one("SELECT blob, version, received_at FROM candidates WHERE user_id = ?", (user_id,))
        return (row[0], row[1], row[2]) if row else None

    def user_state(self, user_id: str, dim: int | None = None) -> UserState | None:
        """The user's on-device state; None if there is none, or if it is damaged (then it is dropped and the
        user's record marked to be fetched whole at the next sync, which brings the server's live state)."""
        row = self.query_one("SELECT s, w, n_events, checksum FROM user_state WHERE user_id = ?", (user_id,))
        if row is None:
            return None
        if not state_ok(user_id, row):
            with self.tx() as conn:
                drop_damaged_state(conn, user_id)
            return None
        return UserState(np.frombuffer(row[0], dtype="<f4").astype(np.float32), row[1], row[2])

    def put_state(self, user_id: str, state: UserState, conn: sqlite3.Connection | None = None) -> None:
        if conn is None:
            with self.tx() as conn:
                return self.put_state(user_id, state, conn)
        s = np.asarray(state.s, dtype="<f4").tobytes()
        conn.execute("INSERT OR REPLACE INTO user_state (user_id, s, w, n_events, updated_at, checksum) "
                     "VALUES (?, ?, ?, ?, ?, ?)", (user_id, s, float(state.w), int(state.n_events), time.time(),
                                                   state_sum(user_id, s, state.w, state.n_events)))

    def damaged(self) -> dict[str, int]:
        """Damage found so far, by kind (event, candidates, state)."""
        return dict(self.query("SELECT kind, COUNT(*) FROM damaged GROUP BY kind"))

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
