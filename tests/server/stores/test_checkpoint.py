"""SQLite WAL checkpoints run in a background thread: commits never checkpoint, and the WAL stays bounded."""

import os
import sqlite3
import time

import pytest

from pocketrank.server.stores.sqlite import SQLiteStore
from pocketrank.shared.errors import ValidationError
from pocketrank.shared.schemas import Event


def _events(batch: int, n: int = 200) -> list[Event]:
    # Wide rows, so a few hundred commits make a WAL of several MiB.
    return [Event(f"b{batch}-{i}", f"user-{i}", "d", "search", 1_700_000_000.0 + i, None, "x" * 200, "s")
            for i in range(n)]


def _wal(path) -> int:
    return os.path.getsize(f"{path}-wal") if os.path.exists(f"{path}-wal") else 0


def test_commits_leave_checkpoints_to_the_thread_and_the_wal_is_bounded(tmp_path):
    store = SQLiteStore(tmp_path / "store.sqlite")
    assert store.db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0  # no checkpoint inside a COMMIT
    cp = store._checkpoints
    cp.restart_bytes, cp.interval = 1 << 20, 0.01
    biggest = 0
    for b in range(150):
        store.append_events(_events(b))
        biggest = max(biggest, _wal(store.path))
    deadline = time.monotonic() + 10
    while cp.restarts == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    store.append_events(_events(999, 1))  # the first commit after a complete checkpoint starts the WAL over
    assert cp.passes > 0 and cp.restarts > 0
    # Without the thread the WAL would hold every page written (150 commits of ~60 KiB each).
    assert biggest < 6 << 20 and _wal(store.path) < 6 << 20
    assert store.count_events() == 150 * 200 + 1
    store.close()
    # Everything committed is readable by a new connection, checkpointed or not.
    with sqlite3.connect(tmp_path / "store.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 150 * 200 + 1


def test_commits_are_fsynced_unless_the_operator_chose_normal(tmp_path, monkeypatch):
    from pocketrank.server.config import Config
    from pocketrank.server.stores import open_store

    assert open_store(Config(home=tmp_path / "a")).db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    monkeypatch.setenv("POCKETRANK_SQLITE_SYNCHRONOUS", "normal")
    store = open_store(Config.from_env(home=tmp_path / "b"))
    assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    monkeypatch.setenv("POCKETRANK_SQLITE_SYNCHRONOUS", "off")
    with pytest.raises(ValidationError, match="POCKETRANK_SQLITE_SYNCHRONOUS"):
        Config.from_env(home=tmp_path / "c")
