"""What `bench attack device` starts: a scratch home, a real server process, devices, and damage.

Nothing here imports tests/: the few lines it shares with them are copied (flip, reseal), or live under
bench/ and are imported by the tests (bench/_openrace.py, bench/_storagechild.py).
"""

from __future__ import annotations

import os
import random
import re
import sqlite3
from pathlib import Path

USER = "196"


def scratch_home(root: Path) -> Path:
    """MovieLens-100k, a 1-epoch model exported and published: nothing of yours changes."""
    from lab.homes import movielens_home

    return movielens_home(root / "home", 1, kind="fold").root


def start_server(home: Path):
    from pocketrank.demo_app.localserver import LocalServer

    os.environ["POCKETRANK_SYNC_RATE"] = "0"  # many short syncs from one address: not the rate limit's test
    return LocalServer(home).start()


class Events:
    """Reads the server's event log from its store file (another process's SQLite, read-only)."""

    def __init__(self, home: Path):
        self.path = Path(home) / "store.sqlite"  # server/stores: the SQLite store lives in the home

    def rows(self, ids: list[str]) -> dict[str, list[tuple]]:
        """Every logged copy of each event, as (type, item index, timestamp)."""
        out: dict[str, list[tuple]] = {e: [] for e in ids}
        conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            for i in range(0, len(ids), 500):
                part = ids[i : i + 500]
                for e, t, item, ts in conn.execute(f"SELECT event_id, type, item_id, timestamp FROM events WHERE "
                                                   f"event_id IN ({','.join('?' * len(part))})", part):
                    out[e].append((t, item, ts))
        finally:
            conn.close()
        return out

    def once(self, ids: list[str]) -> bool:
        return all(len(v) == 1 for v in self.rows(ids).values())

    def none(self, ids: list[str]) -> bool:
        return not any(self.rows(ids).values())


def device(path: Path, server, key: str | None, **kw):
    from pocketrank.edge_runtime import EdgeClient

    name = re.sub(r"[^A-Za-z0-9_.:-]", "-", path.stem)[:64]  # a valid device id from the file's name
    return EdgeClient(path, key, base_url=server.url, device_id=kw.pop("device_id", name), **kw)


def flip(conn: sqlite3.Connection, table: str, column: str, key: str, rng: random.Random,
         where: str = "user_id") -> None:
    """Change one byte of one stored value, keeping its SQLite type (a float is changed by value)."""
    value = conn.execute(f"SELECT {column} FROM {table} WHERE {where} = ?", (key,)).fetchone()[0]
    if isinstance(value, float):
        conn.execute(f"UPDATE {table} SET {column} = ? WHERE {where} = ?", (value * 1.5 + 1.0, key))
        return
    data = bytearray(value.encode() if isinstance(value, str) else value)
    i = rng.randrange(len(data))
    data[i] = (data[i] ^ (1 << rng.randrange(7))) or 1
    conn.execute(f"UPDATE {table} SET {column} = ? WHERE {where} = ?",
                 (data.decode() if isinstance(value, str) else bytes(data), key))


def reseal(conn: sqlite3.Connection) -> None:
    """Recompute the queued rows' checksums after an edit that stands for what an SDK queued, not damage."""
    from pocketrank.edge_runtime.rowsum import event_sum

    rows = conn.execute("SELECT rowid, event_id, user_id, type, body FROM outbox").fetchall()
    conn.executemany("UPDATE outbox SET checksum = ? WHERE rowid = ?", [(event_sum(e, u, t, b), r) for r, e, u, t, b in rows])
