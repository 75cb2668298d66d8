"""SQLite WAL checkpoints off the request path: one background thread per database file per process.

SQLite's automatic checkpoint runs inside whichever COMMIT pushes the WAL past
1,000 pages: that request then copies the whole WAL into the database file
and fsyncs it before it can answer (POST /v1/events stalls of ~1.5 s under
ingestion). The store's connections turn it off (`PRAGMA wal_autocheckpoint=0`)
and this thread checkpoints instead, every `interval` s while the WAL changes:

1. `wal_checkpoint(PASSIVE)`, which never blocks a writer or reader, copies the
   bulk; passes repeat while they keep finding many new frames.
2. A PASSIVE checkpoint alone never lets the WAL shrink under steady writes (by
   the time it is done, new frames follow the copied ones, so the next writer
   cannot start the log over). So once the WAL is past `restart_bytes`, one last
   pass runs holding the store's write lock: it copies only the few frames the
   unlocked passes left, and the next writer restarts the WAL from its start
   (`journal_size_limit` then truncates the file).

Durability does not depend on this thread: a committed transaction is in the
WAL (fsynced at commit with synchronous=FULL), and SQLite replays a WAL that
was never checkpointed when the database is next opened.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
import time
from contextlib import AbstractContextManager

log = logging.getLogger(__name__)

INTERVAL = 0.25  # s between checkpoints while the WAL changes
RESTART_BYTES = 256 << 20  # WAL size past which a pass takes the write lock so the WAL starts over
SMALL_PASS_FRAMES = 2_000  # an unlocked pass that copied fewer frames than this is close enough to the end
IDLE_STOP = 30.0  # s without WAL changes before the thread ends (a commit in this process starts it again)


class Checkpointer:
    """One per database file per process; of those, one at a time works (a flock), so two
    gunicorn workers and an updater process do not copy the same pages three times. It
    watches the WAL file itself, so it checkpoints other processes' commits too."""

    def __init__(self, path: str, write_lock: AbstractContextManager, interval: float = INTERVAL,
                 restart_bytes: int = RESTART_BYTES):
        self.path = path
        self.write_lock = write_lock
        self.interval = interval
        self.restart_bytes = restart_bytes
        self._guard = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self.passes = 0  # for tests and diagnostics
        self.restarts = 0

    def committed(self) -> None:
        """Called after each commit: make sure this process has a checkpointer thread (cheap when it has)."""
        if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
            return
        with self._guard:  # a forked child has no thread even if its parent had one
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name=f"wal-checkpoint:{self.path}",
                                                daemon=True)
                self._thread.start()

    def _run(self) -> None:
        try:
            fd = os.open(self.path + "-checkpointer", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            log.warning("WAL checkpointer for %s could not start: %s", self.path, exc)
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # another process's thread works meanwhile; take over when it stops
            conn = sqlite3.connect(self.path, timeout=5, isolation_level=None, check_same_thread=False)
            try:
                self._loop(conn)
            finally:
                conn.close()
        except sqlite3.Error as exc:
            log.warning("WAL checkpointer for %s stopped: %s", self.path, exc)
        finally:
            # Unlock before closing: a child forked meanwhile holds a copy of this descriptor, and
            # closing ours alone would leave the flock held until that child exits.
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _loop(self, conn: sqlite3.Connection) -> None:
        seen, idle_since = None, time.monotonic()
        while True:
            time.sleep(self.interval)
            now = _wal_stat(self.path)
            if now == seen:
                if time.monotonic() - idle_since > IDLE_STOP:
                    return
                continue
            idle_since = time.monotonic()
            try:
                self.checkpoint(conn)
            except sqlite3.Error as exc:  # the next round tries again; a WAL left over is still correct
                log.warning("WAL checkpoint of %s failed: %s", self.path, exc)
            seen = _wal_stat(self.path)

    def checkpoint(self, conn: sqlite3.Connection) -> None:
        before = 0
        for _ in range(4):  # unlocked passes while each still finds many new frames
            _busy, _frames, done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            self.passes += 1
            if done - before < SMALL_PASS_FRAMES:  # also when the WAL restarted meanwhile (done < before)
                break
            before = done
        if _wal_bytes(self.path) > self.restart_bytes:
            with self.write_lock:  # writers wait here for a pass over what the unlocked ones left
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            self.restarts += 1


def _wal_stat(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path + "-wal")
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _wal_bytes(path: str) -> int:
    try:
        return os.path.getsize(path + "-wal")
    except OSError:
        return 0


_CHECKPOINTERS: dict[str, Checkpointer] = {}
_GUARD = threading.Lock()


def checkpointer(path: str, write_lock: AbstractContextManager) -> Checkpointer:
    """The process's checkpointer for this database file."""
    key = os.path.abspath(path)
    with _GUARD:
        if key not in _CHECKPOINTERS:
            _CHECKPOINTERS[key] = Checkpointer(key, write_lock)
        return _CHECKPOINTERS[key]
