"""Runs a device on a real file system that fills up or turns read-only, in its own mount namespace.

Started by `run_child` as `unshare -rm python -m bench._storagechild` (a user and mount namespace: no
privilege needed), it mounts a small tmpfs, so the SDK meets the kernel's own ENOSPC and EROFS, not an
emulation. It reads one JSON command on stdin and prints one JSON answer. The server it uploads to runs
outside, reached over loopback (the network is not unshared). Shared by tests/faults (test_storage.py,
test_disk_full.py) and `bench attack device`.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def namespaces_work() -> bool:
    """Whether this machine lets an unprivileged process mount a tmpfs of its own (unshare -rm)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return False
    try:
        return subprocess.run([unshare, "-rm", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def run_child(**cmd) -> dict:
    proc = subprocess.run(["unshare", "-rm", sys.executable, "-m", "bench._storagechild"], cwd=ROOT,
                          input=json.dumps(cmd), capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    if proc.returncode != 0:
        raise RuntimeError(f"the storage child failed: {proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def mount(path: Path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)


def fill(path: Path, leave: int = 0) -> None:
    """Write a file until the file system is full, then give back `leave` bytes."""
    filler = path / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    if leave:
        os.truncate(filler, max(0, filler.stat().st_size - leave))


def free(path: Path) -> None:
    (path / "filler").unlink(missing_ok=True)


def flush(c) -> dict:
    from pocketrank.edge_runtime import StorageError

    try:
        r = c.flush()
        return {"sent": r.sent, "acknowledged": r.acknowledged, "remaining": r.remaining, "error": r.error}
    except StorageError as exc:  # flush reports storage trouble in its result; a raise is counted as a failure
        return {"raised": str(exc)}


def full(cmd: dict) -> dict:
    from pocketrank.edge_runtime import EdgeClient, StorageError

    mnt = Path(cmd["dir"])
    mount(mnt, "4m")
    c = EdgeClient(mnt / "d.sqlite", None, base_url=cmd["url"], device_id="full-phone")
    out: dict = {"promised": [c.track("196", "view", str(i)) for i in range(1, 21)]}
    fill(mnt)
    try:
        c.track("196", "view", "50")
        out["track"] = "returned"
    except StorageError as exc:
        out["track"] = str(exc)
    out["flush1"], out["flush2"] = flush(c), flush(c)
    out["status_error"] = c.status()["storage_error"]
    free(mnt)
    out["flush3"] = flush(c)
    c.close()
    return out


def readonly(cmd: dict) -> dict:
    """A database seen through a read-only mount (a bind mount of the same tmpfs, remounted read-only): while
    another client holds its WAL open it opens and answers; once that one closed, it cannot be opened at all."""
    from pocketrank.edge_runtime import EdgeClient, StorageError

    mnt, ro = Path(cmd["dir"]), Path(cmd["dir"] + "-ro")
    mount(mnt, "4m")
    ro.mkdir(parents=True, exist_ok=True)
    writer = EdgeClient(mnt / "d.sqlite", None, base_url=cmd["url"], device_id="ro-phone")
    out: dict = {"promised": [writer.track("196", "view", str(i)) for i in range(1, 6)]}
    subprocess.run(["mount", "--bind", str(mnt), str(ro)], check=True)
    subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], check=True)
    c = EdgeClient(ro / "d.sqlite", None, base_url=cmd["url"], device_id="ro-phone")
    out["recommend"] = c.recommend("196", 5, allow_server=False).source
    try:
        c.track("196", "view", "7")
        out["track"] = "returned"
    except StorageError as exc:
        out["track"] = str(exc)
    out["flush"] = flush(c)
    out["queued"] = c.outbox.count()
    c.close()
    writer.close()
    try:
        EdgeClient(ro / "d.sqlite", None, base_url=cmd["url"], device_id="ro-phone").close()
        out["open"] = "opened"
    except StorageError as exc:
        out["open"] = str(exc)
    c = EdgeClient(mnt / "d.sqlite", None, base_url=cmd["url"], device_id="ro-phone")
    out["flush_after"] = flush(c)
    c.close()
    return out


def loop(cmd: dict) -> dict:
    """Runs with the disk filling at a random point: track (an event is promised once track() returned),
    flush now and then, then free the space and flush until nothing is left."""
    from pocketrank.edge_runtime import EdgeClient, StorageError

    rng = random.Random(cmd["seed"])
    mnt = Path(cmd["dir"])
    mount(mnt, "3m")
    runs = []
    for run in range(cmd["runs"]):
        db = mnt / f"run{run}.sqlite"
        c = EdgeClient(db, None, base_url=cmd["url"], device_id=f"loop-{run}", batch_size=rng.choice([5, 20, 100]))
        promised, refused, flush_raised = [], 0, 0
        for i in range(40):
            if i == rng.randrange(1, 30):
                fill(mnt, leave=rng.choice([0, 2048, 16384, 65536]))
            try:
                promised.append(c.track("196", rng.choice(["view", "click", "purchase"]), str(rng.randrange(1, 400))))
            except StorageError:
                refused += 1
            if rng.random() < 0.2:
                flush_raised += "raised" in flush(c)
        free(mnt)
        for _ in range(5):
            r = flush(c)
            flush_raised += "raised" in r
            if r.get("remaining") == 0:
                break
        c.close()
        conn = sqlite3.connect(db)
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        conn.close()
        runs.append({"promised": promised, "refused": refused, "flush_raised": flush_raised,
                     "remaining": r.get("remaining"), "integrity": integrity})
        for leftover in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
            leftover.unlink(missing_ok=True)
        shutil.rmtree(f"{db}-artifacts", ignore_errors=True)
    return {"runs": runs}


if __name__ == "__main__":
    command = json.loads(sys.stdin.read())
    print(json.dumps({"full": full, "readonly": readonly, "loop": loop}[command["scenario"]](command)))
