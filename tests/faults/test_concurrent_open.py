"""Several processes open one device database at the same instant (the app, its widget, the CLI).

Before schema v5 each process read the schema version before taking the write lock and never again, so a
second process reran step 1 and set the version back on a newer schema; every later open then failed.
Here real processes race on new files and on files in the first release's format holding queued events;
afterwards each file opens, on the newest schema, with every queued event it held. Prints the figures:
runs, failed opens, files left unopenable, events promised (queued before the race) and lost.
"""

from __future__ import annotations

import sqlite3

import pytest

from bench._openrace import broken_by_the_old_race, context, old_format, opened, race
from pocketrank.edge_runtime import schema

PROCESSES, EVENTS = 4, 300


@pytest.mark.parametrize("new_files, old_files", [
    (3, 2),  # the fast suite's
    pytest.param(30, 20, marks=pytest.mark.slow),  # the counts
])
def test_processes_racing_to_open_new_and_old_files_leave_every_file_openable_with_its_events(
        tmp_path, new_files, old_files):
    ctx = context()
    unopenable, failed_opens, promised, lost = 0, 0, 0, 0
    for i in range(new_files):
        results = race(ctx, tmp_path / f"new-{i}.sqlite", PROCESSES)
        failed_opens += sum(r != "ok" for r in results)
        unopenable += opened(tmp_path / f"new-{i}.sqlite")[0] != "ok"
    for i in range(old_files):
        path = tmp_path / f"old-{i}.sqlite"
        ids = old_format(path, EVENTS)
        results = race(ctx, path, PROCESSES)
        failed_opens += sum(r != "ok" for r in results)
        status, held = opened(path)
        unopenable += status != "ok"
        promised += len(ids)
        lost += len(set(ids) - set(held))
    print(f"\nconcurrent open: {new_files} new + {old_files} old files x {PROCESSES} processes: "
          f"{failed_opens} opens failed, {unopenable} files unopenable, {promised} events promised, {lost} lost")
    assert (failed_opens, unopenable, lost) == (0, 0, 0)


def test_a_file_the_old_race_broke_opens_again_with_its_events(tmp_path):
    """The old race left a v4 schema with user_version 1 and v1's `partials` table back: every open failed
    with a raw sqlite3.OperationalError. The schema's shape tells its real version."""
    path = tmp_path / "broken.sqlite"
    ids = broken_by_the_old_race(path, EVENTS)
    status, held = opened(path)
    assert status == "ok" and sorted(held) == sorted(ids)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone() == (schema.LATEST,)
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'partials'").fetchone() is None
    conn.close()
