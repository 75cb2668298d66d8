"""The device database: WAL, the schema version and its migrations, and the content-addressed files."""

import os
import sqlite3

import pytest

from pocketrank.edge_runtime import EdgeClient, IntegrityError, StorageError, schema
from pocketrank.edge_runtime.artifacts import ArtifactFiles

USER = "196"
DEAD = "http://127.0.0.1:9"


def test_a_new_database_is_wal_and_on_the_latest_schema(tmp_path):
    c = EdgeClient(tmp_path / "d.sqlite", None, base_url=DEAD)
    assert c.cache.conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert c.cache.schema_version == schema.LATEST == c.status()["schema_version"]
    assert (tmp_path / "d.sqlite-artifacts").is_dir()
    c.close()


def test_a_database_from_a_newer_sdk_is_refused(tmp_path):
    EdgeClient(tmp_path / "d.sqlite", None, base_url=DEAD).close()
    conn = sqlite3.connect(tmp_path / "d.sqlite")
    conn.execute(f"PRAGMA user_version = {schema.LATEST + 1}")
    conn.close()
    with pytest.raises(StorageError, match="newer SDK"):
        EdgeClient(tmp_path / "d.sqlite", None, base_url=DEAD)


def write_v1(device, path):
    """The database the first release (schema v1) would hold after the same sync and events."""
    conn = sqlite3.connect(path, isolation_level=None)
    schema.migrate(conn, ArtifactFiles(f"{path}-artifacts"), target=1)
    src = device.cache.conn
    conn.execute("BEGIN")
    copies = {
        "items": "item_id, vector, title, category, price, in_stock",
        "candidates": "user_id, blob, version, received_at",
        "user_state": "user_id, s, w, n_events, updated_at",
        "consumed": "user_id, item_id, type",
        "outbox": "event_id, user_id, type, body, size, created_at, attempts",
    }
    for table, cols in copies.items():
        rows = src.execute(f"SELECT {cols} FROM {table}").fetchall()
        conn.executemany(f"INSERT INTO {table} ({cols}) VALUES ({','.join('?' * len(cols.split(',')))})", rows)
    conn.executemany("INSERT INTO meta VALUES (?, ?)", src.execute(
        "SELECT key, value FROM meta WHERE key IN ('bundle_version', 'manifest', 'popular', 'synced_at')"))
    conn.executemany("INSERT INTO artifacts VALUES (?, ?, ?)",
                     [(n, sha, device.cache.files.read(sha)) for n, sha in device.cache.artifact_shas().items()])
    conn.execute("COMMIT")
    assert conn.execute("PRAGMA user_version").fetchone() == (1,)
    conn.close()


def test_a_v1_database_migrates_and_answers_the_same_offline(device, tmp_path, public_key):
    device.sync([USER])
    device.track(USER, "click", "1")
    expected = device.recommend(USER, 10, allow_server=False)
    old = tmp_path / "v1.sqlite"
    write_v1(device, old)

    migrated = EdgeClient(old, public_key, base_url=DEAD)
    assert migrated.cache.schema_version == schema.LATEST
    rec = migrated.recommend(USER, 10, allow_server=False)
    # A database from before string ids names each product by its index's digits (schema v4), as the
    # catalogue of those days did; the order is the same.
    indexes = device.cache.indexes(expected.item_ids)
    assert (rec.source, rec.item_ids) == ("edge", [str(indexes[i]) for i in expected.item_ids])
    held = migrated.cache.conn.execute("SELECT COUNT(*), COUNT(model) FROM items").fetchone()
    assert held[0] > 0 and held[1] == 0  # held under no model: the next sync replaces them with signed PRI2 entries
    assert migrated.status()["outbox"] == 1 and migrated.outbox.totals() == device.outbox.totals()
    cols = [r[1] for r in migrated.cache.conn.execute("PRAGMA table_info(artifacts)")]
    assert "blob" not in cols  # moved out to files
    assert migrated.cache.artifact_shas() == device.cache.artifact_shas()
    migrated.close()


def test_a_failed_migration_leaves_the_database_on_its_version(device, tmp_path, public_key):
    device.sync([USER])
    old = tmp_path / "v1.sqlite"
    write_v1(device, old)
    conn = sqlite3.connect(old)
    good = conn.execute("SELECT blob FROM candidates WHERE user_id = ?", (USER,)).fetchone()[0]
    conn.execute("UPDATE candidates SET blob = ? WHERE user_id = ?", (good[:-3], USER))
    conn.commit()
    conn.close()
    with pytest.raises(IntegrityError):
        EdgeClient(old, public_key, base_url=DEAD)
    conn = sqlite3.connect(old)
    assert conn.execute("PRAGMA user_version").fetchone() == (1,)
    assert conn.execute("SELECT COUNT(*) FROM artifacts WHERE blob IS NOT NULL").fetchone()[0] >= 2  # ranker, encoder
    conn.execute("UPDATE candidates SET blob = ? WHERE user_id = ?", (good, USER))
    conn.commit()
    conn.close()
    assert EdgeClient(old, public_key, base_url=DEAD).recommend(USER, 5, allow_server=False).source == "edge"


def test_artifact_files_are_written_whole_and_checked_on_read(tmp_path):
    from pocketrank.shared.wire import sha256_hex

    files = ArtifactFiles(tmp_path / "a")
    data = os.urandom(5000)
    sha = sha256_hex(data)
    with pytest.raises(IntegrityError):
        files.put(sha, data[:-1])
    files.put(sha, data)
    assert files.read(sha) == data and sorted(p.name for p in files.dir.iterdir()) == [sha]
    files.path(sha).write_bytes(data[:100])
    with pytest.raises(IntegrityError, match="damaged"):
        files.read(sha)
    files.save_partial("f" * 64, b"abc")
    assert files.gc(keep={sha}, grace=3600) == []  # young files are spared: another process may be syncing
    assert sorted(files.gc(keep={sha}, grace=0)) == ["f" * 64 + ".part"]


def test_a_rerank_does_not_wait_for_a_write_in_progress(device):
    import threading
    import time

    device.sync([USER])
    before = device.recommend(USER, 5, allow_server=False).item_ids
    inside, release = threading.Event(), threading.Event()

    def long_write():
        try:
            with device.cache.tx() as conn:
                conn.execute("DELETE FROM candidates")
                inside.set()
                release.wait(10)
                raise RuntimeError("roll it back")
        except RuntimeError:
            pass

    writer = threading.Thread(target=long_write)
    writer.start()
    inside.wait(10)
    start = time.perf_counter()
    rec = device.recommend(USER, 5, allow_server=False)
    waited = time.perf_counter() - start
    release.set()
    writer.join()
    assert rec.item_ids == before and rec.source == "edge"  # the uncommitted delete is not seen
    assert waited < 1.0  # and not waited for
