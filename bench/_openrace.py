"""Processes that open one device database at the same instant, and old-format files for them to open.

Shared by tests/faults/test_concurrent_open.py and `bench attack device`. The children fork from a
forkserver that imported the SDK once (not from the caller, which may hold threads and a server).
"""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import uuid
from pathlib import Path

DEAD = "http://127.0.0.1:9"  # nothing listens there: opening needs no network


def open_once(path: str, barrier, out) -> None:
    from pocketrank.edge_runtime import EdgeClient

    barrier.wait(timeout=60)
    try:
        EdgeClient(path, None, base_url=DEAD, device_id="racer").close()
        out.put("ok")
    except Exception as exc:  # every outcome is reported, whatever it is: that is what is counted
        out.put(f"{type(exc).__name__}: {exc}")


def context():
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["pocketrank.edge_runtime.client", "bench._openrace"])
    return ctx


def race(ctx, path: Path, processes: int = 4) -> list[str]:
    """Each process's outcome ("ok" or the error) of opening `path` at once."""
    barrier, out = ctx.Barrier(processes), ctx.Queue()
    procs = [ctx.Process(target=open_once, args=(str(path), barrier, out)) for _ in range(processes)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    return results


def old_format(path: Path, events: int) -> list[str]:
    """A database as the first release wrote it (schema v1, user_version 1) with `events` views queued."""
    from pocketrank.edge_runtime import schema
    from pocketrank.edge_runtime.artifacts import ArtifactFiles

    conn = sqlite3.connect(path, isolation_level=None)
    schema.migrate(conn, ArtifactFiles(f"{path}-artifacts"), target=1)
    ids = [uuid.uuid4().hex for _ in range(events)]
    rows = []
    for i, e in enumerate(ids):
        ts = 1_700_000_000.0 + i
        body = json.dumps({"event_id": e, "user_id": "196", "device_id": "old", "type": "view", "item_id": "50",
                           "timestamp": ts})
        rows.append((e, body, len(body), ts))
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO outbox (event_id, user_id, type, body, size, created_at, attempts) "
                     "VALUES (?, '196', 'view', ?, ?, ?, 0)", rows)
    conn.execute("COMMIT")
    conn.close()
    return ids


def broken_by_the_old_race(path: Path, events: int) -> list[str]:
    """What the old race left: a v4 schema whose user_version was set back to 1, with v1's `partials` back."""
    from pocketrank.edge_runtime import schema
    from pocketrank.edge_runtime.artifacts import ArtifactFiles

    ids = old_format(path, events)
    conn = sqlite3.connect(path, isolation_level=None)
    schema.migrate(conn, ArtifactFiles(f"{path}-artifacts"), target=4)
    conn.execute("CREATE TABLE partials ([sha256] TEXT PRIMARY KEY, [blob] BLOB)")
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    return ids


def opened(path: Path) -> tuple[str, list[str]]:
    """("ok", the queued event ids) once the file opens on the newest schema, or (what went wrong, [])."""
    from pocketrank.edge_runtime import EdgeClient, schema

    try:
        c = EdgeClient(path, None, base_url=DEAD)
    except Exception as exc:  # counted, not raised: the figures are the point
        return f"{type(exc).__name__}: {exc}", []
    try:
        if c.cache.schema_version != schema.LATEST:
            return f"on schema v{c.cache.schema_version}", []
        return "ok", [e["event_id"] for e in c.outbox.batch(100_000, 1 << 30)]
    finally:
        c.close()
