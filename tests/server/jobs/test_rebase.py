"""Re-basing the store on a promoted model (server/jobs/rebase.py), end to end on the trained home.

After a canary is promoted, the store's item vectors, user states, segment vectors and
current_model are the promoted model's: /readyz names it, a publish ships it, and every user's
state is the fold of their events with its vectors, also when events arrive during the re-base.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pocketrank.cli import main
from pocketrank.server.api.app import create_app
from pocketrank.server.bundle.publish import publish_job
from pocketrank.server.config import Config
from pocketrank.server.home import Home
from pocketrank.server.jobs import rollout
from pocketrank.server.jobs.rebase import rebase
from pocketrank.server.online.segments import compute_segments, loads
from pocketrank.server.online.serving import Serving
from pocketrank.server.online.versions import save_vectors, version_vectors
from pocketrank.server.release import canary
from pocketrank.server.release.registry import Registry
from pocketrank.server.stores import open_store
from pocketrank.shared.errors import ValidationError
from pocketrank.shared.features import UserState, update_user_state, user_vector
from pocketrank.shared.schemas import Event
from tests.server.conftest import seed_store, write_dot_ranker
from tests.server.release.test_canary_serving import _arm_events

LENIENT = canary.Rule(margin=1.0, min_users=20, min_impressions=200)


def new_version(home: Path, store, name: str, drop: int | None = None, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """A copy of the current model with perturbed item vectors; `drop`: a product it has never seen."""
    current = store.get_meta("current_model")
    ids, vecs = store.item_vectors()
    vecs = vecs + 0.3 * np.random.default_rng(seed).normal(size=vecs.shape).astype(np.float32) * vecs.std()
    if drop is not None:
        keep = ids != drop
        ids, vecs = ids[keep], vecs[keep]
    dst = Path(home) / "models" / name
    if (Path(home) / "models" / current).exists():
        shutil.copytree(Path(home) / "models" / current, dst)
    else:
        write_dot_ranker(dst / "ranker.fp32.onnx", vecs.shape[1])
    save_vectors(dst, ids, vecs)
    return ids, vecs


def folded(store, users, dim: int) -> dict[str, UserState]:
    """Each user's events in log order, folded with the store's (new) item vectors."""
    ids, vecs = store.item_vectors()
    by_id = {int(i): v for i, v in zip(ids, vecs)}
    states = {u: UserState.empty(dim) for u in users}
    for e in store.iter_log(0):
        if e.event.user_id in states:
            states[e.event.user_id] = update_user_state(
                states[e.event.user_id], by_id.get(e.event.item_id) if e.event.item_id else None, e.event.type)
    return states


def assert_refolded(store, users, dim):
    got, want = store.user_records(users, dim), folded(store, users, dim)
    for u in users:
        assert want[u].w > 0
        np.testing.assert_allclose(got[u].state.s, want[u].s, rtol=1e-4, atol=1e-5)
        assert got[u].state.w == pytest.approx(want[u].w, rel=1e-6)


@pytest.mark.slow
def test_a_promoted_canary_becomes_the_stores_model_and_what_devices_get(home):
    store = open_store(Config(home=home))
    old = store.get_meta("current_model")
    old_ids, old_vecs = store.item_vectors()
    dim = old_vecs.shape[1]
    unseen = int(old_ids[-1])
    ids, vecs = new_version(home, store, "m-next", drop=unseen)
    Registry(home).register("m-next", lineage={"parent": old})
    rollout.start(home, store, "m-next", 0.05)
    _arm_events(store, "s1")
    # The promotion's re-base reads the user attributes imported with MovieLens into the store.
    result = rollout.check(home, store, LENIENT, stages=(0.05,), profiles="store")
    assert result["action"] == "promote", result
    assert result["rebase"]["status"] == "rebased", result["rebase"]
    # The store's model, its item vectors, and a product the new model never saw (provisional, re-estimated).
    assert store.get_meta("current_model") == "m-next" == Registry(home).live()
    s_ids, s_vecs = store.item_vectors()
    known = s_ids != unseen
    assert np.array_equal(s_ids[known], ids) and np.allclose(s_vecs[known], vecs)
    assert store.provisional_items() == {unseen}
    assert not np.allclose(s_vecs[~known][0], old_vecs[old_ids == unseen][0])
    # Every user's state is the fold of their events with the new vectors (MovieLens and synthetic users).
    assert_refolded(store, ["1", "42", "943", "syn-0", "syn-7"], dim)
    # Segment vectors: means of the refolded users' vectors.
    segs = loads(store.get_meta("segments"))
    profiles = store.profiles()
    assert len(profiles) == 943
    recs = store.user_records(list(profiles), dim)
    want = compute_segments({u: user_vector(r.state) for u, r in recs.items() if r.state.w > 0}, profiles)
    assert set(segs) == set(want) and np.allclose(segs["gender=F"], want["gender=F"], atol=1e-5)
    # /readyz and the serving path: the new model, native (a new user gets a segment answer).
    api = create_app(Config(home=home)).test_client()
    assert api.get("/readyz").get_json()["model_version"] == "m-next"
    body = api.get("/v1/recommendations?user_id=42&k=5").get_json()
    assert body["model_version"] == "m-next"
    cold = api.get("/v1/recommendations?user_id=newbie&k=5&gender=F").get_json()
    assert cold["model_version"] == "m-next" and cold.get("segment") == "gender=F", cold
    # A publish after it ships the new model (the manifest as devices read it).
    out = publish_job(Home(home), progress=False)
    manifest = json.loads((Home(home).bundle_dir(out["version"]) / "manifest.json").read_text())
    assert manifest["model_version"] == "m-next"
    # Idempotent: a second run leaves it as it is; forced, it refolds to the same states.
    before = store.user_records(["42"], dim)["42"].state
    assert rebase(home, store, "m-next", progress=False)["status"] == "unchanged"
    assert rebase(home, store, "m-next", force=True, progress=False)["status"] == "rebased"
    assert np.allclose(store.user_records(["42"], dim)["42"].state.s, before.s)
    store.close()


@pytest.mark.slow
def test_a_failed_rebase_leaves_the_old_store_intact(home, monkeypatch):
    store = open_store(Config(home=home))
    old = store.get_meta("current_model")
    old_ids, old_vecs = store.item_vectors()
    dim = old_vecs.shape[1]
    state = store.user_records(["42"], dim)["42"].state
    cat_version = store.catalogue_version()
    new_version(home, store, "m-next")
    reg = Registry(home)
    reg.register("m-next")
    with pytest.raises(ValidationError):
        rebase(home, store, "m-next", progress=False)  # a candidate: promote it first
    reg.start_canary("m-next", 0.05)
    reg.promote("m-next")

    def broken(*a, **kw):
        raise RuntimeError("disk full")

    monkeypatch.setattr(store, "reset_derived", broken)  # fails after the items were written, in the swap
    with pytest.raises(RuntimeError):
        rebase(home, store, "m-next", progress=False)
    ids, vecs = store.item_vectors()
    assert store.get_meta("current_model") == old and store.catalogue_version() == cat_version
    assert np.array_equal(ids, old_ids) and np.array_equal(vecs, old_vecs)
    assert np.array_equal(store.user_records(["42"], dim)["42"].state.s, state.s)
    monkeypatch.undo()
    # The CLI finishes it.
    out = CliRunner().invoke(main, ["rebase", "--home", str(home), "m-next", "--profiles", "none"])
    assert out.exit_code == 0 and '"status": "rebased"' in out.output, out.output
    assert store.get_meta("current_model") == "m-next" and loads(store.get_meta("segments")) == {}
    out = CliRunner().invoke(main, ["rebase", "--home", str(home), old])
    assert out.exit_code == 1 and "promote it through a canary" in out.output
    store.close()


@pytest.mark.slow
def test_events_ingested_during_a_rebase_end_up_folded_with_the_new_vectors(home):
    config = Config(home=home)
    serving = Serving(config)
    store = serving.store
    new_version(home, store, "m-next")
    Registry(home).register("m-next", state="live")
    done, result = threading.Event(), {}

    def job():
        try:
            result["out"] = rebase(home, open_store(config), "m-next", progress=False)
        finally:
            done.set()

    users = [str(u) for u in range(1, 21)]
    t = threading.Thread(target=job)
    t.start()
    n, during = 0, 0
    while not done.is_set() or n < 40:
        u = users[n % len(users)]
        serving.updater.ingest([Event(f"live-{n}", u, "d", "click", time.time(), 1 + n % 50)])
        during += not done.is_set()
        n += 1
        time.sleep(0.005)
    t.join()
    assert result["out"]["status"] == "rebased" and during > 0
    serving.catch_up()
    assert store.pending_count() == 0
    assert store.get_meta("current_model") == "m-next"
    assert_refolded(store, users, serving.dim)


def test_rebase_on_either_store(store, tmp_path):
    """On SQLite and Redis: with no registry, the version becomes live and the store's model."""
    home = tmp_path / "h"
    seed_store(store, home)
    events = [Event(f"e{i}", f"u{i % 7}", "d", ("click", "view", "impression")[i % 3], 1000.0 + i, 1 + i % 40)
              for i in range(300)]
    store.append_events(events)
    ids, vecs = new_version(home, store, "synthetic-2")
    out = rebase(home, store, "synthetic-2", progress=False)
    assert out["status"] == "rebased" and out["events"] == 300 and out["users"] == 7
    assert store.get_meta("current_model") == "synthetic-2" and Registry(home).live() == "synthetic-2"
    s_ids, s_vecs = store.item_vectors()
    assert np.array_equal(s_ids, ids) and np.allclose(s_vecs, vecs)
    assert store.pending_count() == 0
    assert_refolded(store, [f"u{i}" for i in range(7)], vecs.shape[1])
    assert version_vectors(home / "models" / "synthetic-2")[0].size == ids.size
