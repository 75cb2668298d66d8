"""SIGKILL at random points during sync apply, model swap and outbox upload, many times each.

After every kill: the database passes PRAGMA integrity_check, holds wholly the
old or wholly the new bundle (its user states included), every file it points
at is whole, and after a restart every event that track() had returned for
reaches the server exactly once. POCKETRANK_KILL_REPEATS sets the repetitions
per kill point (default 50).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from lab.homes import copy_home
from pocketrank.edge_runtime import EdgeClient
from pocketrank.server.bundle.publish import publish_job
from pocketrank.server.home import Home

from .liveserver import LiveServer

pytestmark = pytest.mark.slow  # see `make test-fast`

ROOT = Path(__file__).resolve().parents[2]
REPEATS = int(os.environ.get("POCKETRANK_KILL_REPEATS", "50"))  # kills that land, per kill point
MAX_RUNS_PER_KILL = 4  # runs allowed per landed kill before the aim is called broken
USERS = ["186", "196"]
DB = "device.sqlite"


def bundle_digest(db: Path) -> str:
    """What a bundle version consists of on the device (receive times left out)."""
    conn = sqlite3.connect(db)
    h = hashlib.sha256()
    for query in ("SELECT key, value FROM meta WHERE key IN ('bundle_version', 'manifest', 'popular', 'categories') "
                  "ORDER BY key",
                  "SELECT * FROM items ORDER BY item_id",
                  "SELECT user_id, blob, version, ids, scores, vectors, stock, cats FROM candidates ORDER BY user_id",
                  "SELECT name, sha256, length FROM artifacts ORDER BY name"):
        for row in conn.execute(query):
            h.update(repr(row).encode())
    conn.close()
    return h.hexdigest()


@dataclass
class World:
    root: Path
    server: LiveServer
    key: str
    template: Path
    digests: dict[str, str]
    template_states: dict[str, int]
    ranker_sha: str
    items: list[int]
    worker: subprocess.Popen

    def run(self, **cmd) -> dict:
        self.worker.stdin.write(json.dumps(cmd) + "\n")
        self.worker.stdin.flush()
        return json.loads(self.worker.stdout.readline())

    def fresh_device(self, name: str) -> Path:
        dst = self.root / "reps" / name
        shutil.copytree(self.template, dst)
        return dst / DB


@pytest.fixture(scope="module")
def world(trained_home, tmp_path_factory):
    root = tmp_path_factory.mktemp("kill")
    home = root / "home"
    copy_home(trained_home, home)
    server = LiveServer(home, sync_rate=0.0)  # a kill loop syncs far faster than a phone may
    key = (home / "keys" / "signing.pub").read_text().strip()
    template = root / "template"
    c = EdgeClient(template / DB, key, base_url=server.url, device_id="template")
    c.sync(USERS)
    states = {u: c.cache.user_state(u).n_events for u in USERS}
    items = [int(i) for i in c.cache.packed(USERS[0]).ids[:20]]
    c.close()

    # Bundle v2: the users did something elsewhere (so their live states differ from v1's), a
    # batch job refreshed the item vectors, and a new ranker came out.
    other = EdgeClient(root / "other.sqlite", key, base_url=server.url, device_id="other-phone")
    for u in USERS:
        other.track(u, "click", items[-1])
    assert other.flush().acknowledged == len(USERS)
    other.close()
    h = Home(home)
    store = h.store()
    ids, vecs = store.item_vectors()
    store.put_items(store.items(), {int(i): (v * 1.01).astype(np.float32) for i, v in zip(ids, vecs)})
    model_dir = h.model_dir(h.current_model(store))
    (model_dir / "ranker.int8.onnx").write_bytes((model_dir / "ranker.fp32.onnx").read_bytes())
    publish_job(h, progress=False)
    manifest = json.loads((h.bundle_dir(2) / "manifest.json").read_bytes())

    new = root / "new"
    shutil.copytree(template, new)
    c = EdgeClient(new / DB, key, base_url=server.url, device_id="reference")
    assert c.sync(USERS).version == 2
    c.close()
    digests = {"old": bundle_digest(template / DB), "new": bundle_digest(new / DB)}
    assert digests["old"] != digests["new"]

    worker = subprocess.Popen([sys.executable, "-m", "tests.faults.crashworker"], cwd=ROOT, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    yield World(root, server, key, template, digests, states, manifest["artifacts"]["ranker"]["sha256"], items,
                worker)
    worker.stdin.close()
    worker.wait(timeout=30)
    server.close()


def check_after_kill(world: World, db: Path, device_id: str, events: list[str],
                     new_base: dict[str, int] | None = None, figures: Counter | None = None) -> str:
    """Everything the brief promises after a kill; returns which version the device was left on ("corrupt" when
    the database failed its integrity check or holds a mix of versions). Adds to `figures` the events promised
    (track() returned), lost (never reached the server), duplicated (reached it more than once), and the
    corrupted databases."""
    figures = Counter() if figures is None else figures
    figures["runs"] += 1
    figures["promised"] += len(events)
    conn = sqlite3.connect(db)
    intact = conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()
    digest = bundle_digest(db) if intact else None
    left_on = {v: k for k, v in world.digests.items()}.get(digest) if intact else None
    if left_on is None:  # the database is damaged, or holds a mix of the old and the new bundle
        figures["corrupted"] += 1
        counts = world.server.event_counts(events)
        figures["lost"] += sum(n == 0 for n in counts.values())
        figures["duplicated"] += sum(n > 1 for n in counts.values())
        return "corrupt"

    c = EdgeClient(db, world.key, base_url=world.server.url, device_id=device_id)
    for _name, sha in c.cache.artifact_shas().items():
        c.cache.files.read(sha)  # present and whole, or IntegrityError
    # The user states belong to the same version: the held bundle's live state plus the pending events.
    for u in USERS if new_base else ():
        base = world.template_states[u] if left_on == "old" else new_base[u]
        assert c.cache.user_state(u).n_events == base + len(c.outbox.pending_for(u)), (u, left_on)
    rec = c.recommend(USERS[0], 10, allow_server=False)
    assert rec.source == "edge" and len(rec.items) == 10 and rec.candidates_version == (1 if left_on == "old" else 2)

    assert c.sync(USERS).version == 2 and bundle_digest(db) == world.digests["new"]
    assert c.flush().remaining == 0
    # A kill between the commit and the old files' deletion leaves orphans; collection removes them.
    referenced = set(c.cache.artifact_shas().values())
    c.cache.files.gc(referenced, grace=0)
    assert {p.name for p in c.cache.files.dir.iterdir()} == referenced
    c.close()
    counts = world.server.event_counts(events)
    figures["lost"] += sum(n == 0 for n in counts.values())
    figures["duplicated"] += sum(n > 1 for n in counts.values())
    return left_on


def server_states(world: World, scenario: str) -> dict[str, int] | None:
    if scenario != "sync":
        return None
    return {u: world.server.store.user_state(u, 64).n_events for u in USERS}


def kill_window(world: World, scenario: str, marker: str) -> tuple[float, float | None]:
    """How long the marked stretch takes here and now, and when in it the commit happens
    (medians of three unkilled runs)."""
    times, commits = [], []
    for i in range(3):
        db = world.fresh_device(f"calibrate-{marker}-{i}")
        res = world.run(scenario=scenario, marker=marker, delay=None, db=str(db), url=world.server.url,
                        key=world.key, device=f"cal-{marker}-{i}", users=USERS, track=world.items[:2],
                        ranker_sha=world.ranker_sha)
        assert res["error"] is None and res["done"] and res["went"], res
        times.append(res["go_to_done"])
        commits.append(res["go_to_commit"])
        assert check_after_kill(world, db, f"cal-{marker}-{i}", res["events"], server_states(world, scenario)) != "corrupt"
    return statistics.median(times), statistics.median(commits) if scenario == "sync" else None


@pytest.mark.parametrize("scenario, marker", [("sync", "apply"), ("sync", "swap"), ("upload", "upload")])
def test_a_kill_at_a_random_point_loses_nothing_and_mixes_nothing(world, scenario, marker):
    window, commit = kill_window(world, scenario, marker)
    rng = random.Random(f"{scenario}-{marker}")
    outcomes: Counter = Counter()
    figures: Counter = Counter()
    # Runs go on until REPEATS kills have landed inside the marked stretch (a kill that comes
    # after the run finished is still checked, but does not count): a machine faster or slower
    # than the calibration changes how many runs that takes, not how many kills are tested.
    killed, i = 0, 0
    while killed < REPEATS and i < MAX_RUNS_PER_KILL * REPEATS:
        device_id = f"kill-{marker}-{i}"
        db = world.fresh_device(device_id)
        n_events = 2 if scenario == "sync" else 5
        new_base = server_states(world, scenario)  # what a sync now would bring
        # Half the kills anywhere in the stretch; half within 2 ms of where the commit was, so
        # both sides of it (and the old files' deletion just after it) are hit many times.
        near = rng.uniform(max(0.0, commit - 0.002), commit + 0.002) if commit else rng.uniform(0, window)
        delay = rng.uniform(0, 1.1 * window) if i % 2 else near
        res = world.run(scenario=scenario, marker=marker, delay=delay, db=str(db),
                        url=world.server.url, key=world.key, device=device_id, users=USERS,
                        track=world.items[i % 10 : i % 10 + n_events], ranker_sha=world.ranker_sha)
        assert res["error"] is None and res["went"], res
        assert len(res["events"]) == n_events
        left_on = check_after_kill(world, db, device_id, res["events"], new_base, figures)
        outcomes[("killed" if res["killed"] else "finished", left_on)] += 1
        killed += bool(res["killed"])
        i += 1
        shutil.rmtree(db.parent)
    print(f"\n{scenario}/{marker}: window {window * 1000:.1f} ms"
          + (f", commit at {commit * 1000:.1f} ms" if commit else "") + f", {i} runs: {dict(outcomes)}")
    print(f"kill figures {scenario}/{marker}: {i} runs, {killed} killed inside the stretch, events promised "
          f"{figures['promised']}, lost {figures['lost']}, duplicated {figures['duplicated']}, corrupted databases "
          f"{figures['corrupted']}")
    assert figures["lost"] == figures["duplicated"] == figures["corrupted"] == 0, dict(figures)
    assert killed >= REPEATS, f"only {killed} of {i} kills landed inside the marked stretch"
    if marker == "apply":
        assert {left for how, left in outcomes if how == "killed"} == {"old", "new"}  # both sides of the commit
