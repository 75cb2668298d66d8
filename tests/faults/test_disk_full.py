"""A disk that fills up during a sync: SQLite's own limit (PRAGMA max_page_count) makes writes fail with SQLITE_FULL."""

import sqlite3

import numpy as np
import pytest

from pocketrank.edge_runtime import StorageError
from pocketrank.server.bundle.publish import publish_job
from pocketrank.server.home import Home

from .storage import needs_namespaces, run_child

USER = "196"


def publish_new_vectors(home):
    h = Home(home)
    store = h.store()
    ids, vecs = store.item_vectors()
    store.put_items(store.items(), {int(i): (v * 1.01).astype(np.float32) for i, v in zip(ids, vecs)})
    publish_job(h, progress=False)


def test_a_full_disk_during_sync_leaves_the_previous_version_serving(device, home):
    device.sync([USER])
    before = device.recommend(USER, 10, allow_server=False)
    old_files = device.cache.artifact_shas()
    publish_new_vectors(home)

    conn = device.cache.conn
    conn.execute("VACUUM")  # no free pages to fall back on: the sync's writes must grow the file
    conn.execute(f"PRAGMA max_page_count = {conn.execute('PRAGMA page_count').fetchone()[0]}")
    with pytest.raises(StorageError, match="storage is full"):
        device.sync([USER, "186"])  # a second user's candidates need new pages

    assert device.cache.version == 1 and device.cache.artifact_shas() == old_files
    after = device.recommend(USER, 10, allow_server=False)
    assert (after.source, after.item_ids, after.candidates_version) == ("edge", before.item_ids, 1)
    for sha in old_files.values():
        device.cache.files.read(sha)  # the previous version's files are all still there, whole
    check = sqlite3.connect(device.cache.path)
    assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    check.close()

    conn.execute("PRAGMA max_page_count = 1073741823")  # space freed
    assert device.sync([USER, "186"]).version == 2
    assert device.recommend("186", 10, allow_server=False).candidates_version == 2


@needs_namespaces
def test_a_disk_filling_at_random_points_loses_and_duplicates_nothing(live_server, tmp_path):
    """RUNS devices on a real tmpfs that fills at a random point (a random few KB left): every event whose
    track() returned reaches the server exactly once after the space is freed. Prints the figures."""
    runs = 20
    out = run_child(scenario="loop", dir=str(tmp_path / "mnt"), url=live_server.url, runs=runs, seed=11)
    promised = [e for r in out["runs"] for e in r["promised"]]
    counts = live_server.event_counts(promised)
    figures = {
        "runs": runs, "promised": len(promised), "refused_by_track": sum(r["refused"] for r in out["runs"]),
        "lost": sum(c == 0 for c in counts.values()), "duplicated": sum(c > 1 for c in counts.values()),
        "corrupted": sum(r["integrity"] != "ok" for r in out["runs"]),
        "flush_raised": sum(r["flush_raised"] for r in out["runs"]),
    }
    print(f"\ndisk full loop: {figures}")
    assert figures["lost"] == figures["duplicated"] == figures["corrupted"] == figures["flush_raised"] == 0
    assert figures["refused_by_track"] > 0  # the disk did fill up
    assert all(r["remaining"] == 0 for r in out["runs"])
