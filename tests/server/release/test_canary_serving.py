"""Issue 8's acceptance test, end to end through the serving path.

A deliberately broken model (shuffled item vectors) released as a canary to 5% is rolled back
automatically before it reaches more users; a good model under the same procedure is not.
MovieLens users ask the Flask app for recommendations, click by their tastes
(lab/served_models.py), post the events back with the model version that answered, and the canary job
looks after every round.
"""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest
from click.testing import CliRunner

from lab.served_models import Tastes, derive_version, simulate_round
from pocketrank.cli import main
from pocketrank.server.api.app import create_app
from pocketrank.server.config import STAGES, Config, parse_stages
from pocketrank.server.jobs import rollout
from pocketrank.server.monitoring import source
from pocketrank.server.online.versions import VECTORS_FILE, version_vectors
from pocketrank.server.release import canary
from pocketrank.server.release.registry import Registry
from pocketrank.server.stores import open_store
from pocketrank.shared.errors import ValidationError

pytestmark = pytest.mark.slow  # see `make test-fast`

MAX_ROUNDS = 3


@pytest.fixture
def served(home):
    store = open_store(Config(home=home))
    live = store.get_meta("current_model")
    derive_version(home, store, "m-good")
    derive_version(home, store, "m-broken", shuffle_seed=1)
    reg = Registry(home)
    reg.register("m-good", lineage={"parent": live, "note": "an identical copy"})
    reg.register("m-broken", lineage={"parent": live, "note": "item vectors shuffled"})
    app = create_app(Config(home=home))
    yield app.test_client(), store, live, Tastes(store)
    store.close()


def run_rollout(api, home, store, tastes, version, rounds=MAX_ROUNDS, seed=0):
    ro = rollout.start(home, store, version, 0.05)
    rng = np.random.default_rng(seed)
    results, served = [], []
    for r in range(rounds):
        served.append(simulate_round(api, tastes.users, tastes, rng, f"{version}-{r}"))
        results.append(rollout.check(home, store))
        if results[-1]["action"] not in ("continue", "wait"):
            break
    return ro, results, served


def test_a_broken_canary_at_five_percent_is_rolled_back_before_it_widens(served, home):
    api, store, live, tastes = served
    ro, results, served_by = run_rollout(api, home, store, tastes, "m-broken")
    in_canary = {u for u in tastes.users if canary.in_canary(u, ro["rollout_id"], 0.05)}
    # The serving path routed by the registry: the canary's users got the broken model, no one else did.
    assert {u for u, v in served_by[0].items() if v == "m-broken"} == in_canary
    assert set(served_by[0].values()) == {live, "m-broken"} and 20 <= len(in_canary) <= 80
    final = results[-1]
    assert final["action"] == "rollback", results
    d = final["decision"]
    assert d["ctr_canary"] < 0.75 * d["ctr_control"] and d["z_ctr"] <= -d["z_crit"]
    assert all(r["action"] in ("continue", "wait", "rollback") for r in results)  # never widened
    reg = Registry(home).load()
    done = reg["rollouts"][-1]
    assert done["outcome"] == "rolled back" and done["share"] == 0.05 and done["rollout_id"] == ro["rollout_id"]
    assert not any("widened" in h["event"] for h in reg["history"])
    assert reg["versions"]["m-broken"]["state"] == "retired" and reg["rollout"] is None
    # After the rollback the canary's users get the live model on their next request.
    for u in sorted(in_canary)[:10]:
        assert api.get(f"/v1/recommendations?user_id={u}&k=10").get_json()["model_version"] == live
    # The events carried the version that answered, so the collector splits by it too.
    by_model = api.get("/v1/metrics/summary?window=3600").get_json()["by_segment"]["model_version"]
    assert by_model["m-broken"]["ctr"] < by_model[live]["ctr"]


def test_a_good_canary_under_the_same_procedure_is_not_rolled_back(served, home):
    api, store, live, tastes = served
    ro, results, served_by = run_rollout(api, home, store, tastes, "m-good")
    assert len(results) == MAX_ROUNDS or results[-1]["action"] in ("widen", "promote")
    assert all(r["action"] in ("continue", "wait", "widen", "promote") for r in results), results
    assert Registry(home).get("m-good")["state"] in ("canary", "live")
    d = results[-1]["decision"]
    assert abs(d["z_ctr"]) < d["z_crit"] and d["ctr_canary"] > 0.8 * d["ctr_control"]
    assert "m-good" in set(served_by[0].values())


def test_the_sdk_sends_back_the_version_that_answered(device, app, home):
    """Through the real EdgeClient: a canary user's click carries the canary's version to the event log."""
    store = app.extensions["pocketrank"].store
    live = store.get_meta("current_model")
    derive_version(home, store, "m-broken", shuffle_seed=1)
    Registry(home).register("m-broken")
    ro = rollout.start(home, store, "m-broken", 0.05)
    users = [str(u) for u in range(1, 944)]
    inside = next(u for u in users if canary.in_canary(u, ro["rollout_id"], 0.05))
    outside = next(u for u in users if not canary.in_canary(u, ro["rollout_id"], 0.05))
    for user, version in ((inside, "m-broken"), (outside, live)):
        rec = device.recommend(user, 10)
        assert rec.source == "server" and rec.model_version == version
        device.track(user, "click", rec.items[0].item_id)
    assert device.flush().acknowledged == 2
    clicks = {e.user_id: dict(e.context) for e in source.events_after(store, ro["stage_from"])}
    assert clicks[inside]["model_version"] == "m-broken" and clicks[outside]["model_version"] == live


def test_the_watcher_in_serve_rolls_back_on_its_own(served, home):
    api, store, live, tastes = served
    ro = rollout.start(home, store, "m-broken", 0.05)
    for r in range(2):
        simulate_round(api, tastes.users, tastes, np.random.default_rng(r), f"w{r}")
    watcher = rollout.Watcher(Config(home=home), 0.05, STAGES).start()
    try:
        deadline = time.monotonic() + 10
        while Registry(home).rollout() is not None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        watcher.stop.set()
        watcher.thread.join(5)
    reg = Registry(home).load()
    assert reg["rollout"] is None and reg["rollouts"][-1]["rollout_id"] == ro["rollout_id"]
    assert reg["rollouts"][-1]["outcome"] == "rolled back"


def _arm_events(store, tag: str, n_users: int = 1000, sessions: int = 3, seed: int = 0) -> None:
    """Logged sessions for synthetic users, the same CTR (0.3) and bounce rate (0.2) in both arms."""
    from pocketrank.shared.schemas import Event

    rng = np.random.default_rng(seed)
    t, out = time.time(), []
    for u in range(n_users):
        for s in range(sessions):
            sid, bounce = f"{tag}-{u}-{s}", rng.random() < 0.2
            for i in range(1, 6):
                out.append(Event(f"{sid}-i{i}", f"syn-{u}", "d", "impression", t, i, session_id=sid))
                if not bounce and rng.random() < 0.375:  # 0.8 x 0.375 = 0.3 clicks per impression
                    out.append(Event(f"{sid}-c{i}", f"syn-{u}", "d", "click", t, i, session_id=sid))
    store.append_events(out)


def test_a_healthy_canary_widens_then_is_promoted_and_serves_everyone(served, home):
    """With a lenient rule (non-inferior within 100%, 20 users an arm), the staged plan runs to the end."""
    api, store, live, tastes = served
    rule = canary.Rule(margin=1.0, min_users=20, min_impressions=200)
    ro = rollout.start(home, store, "m-good", 0.05)
    _arm_events(store, "s1")
    first = rollout.check(home, store, rule, stages=(0.05, 0.25))
    assert first["action"] == "widen" and first["decision"]["to_share"] == 0.25, first
    widened = Registry(home).rollout()
    assert widened["share"] == 0.25 and widened["stage_from"] > ro["stage_from"]
    # The new stage reads only events logged after the widening: none yet, so no look is taken.
    assert rollout.check(home, store, rule, stages=(0.05, 0.25))["action"] == "wait"
    _arm_events(store, "s2", seed=1)
    second = rollout.check(home, store, rule, stages=(0.05, 0.25))
    assert second["action"] == "promote" and second["decision"]["look"] == 2, second
    reg = Registry(home).load()
    assert reg["versions"]["m-good"]["state"] == "live" and reg["versions"][live]["state"] == "retired"
    assert [d["action"] for d in reg["rollouts"][-1]["decisions"]] == ["widen", "promote"]
    # Promoted: the store is re-based on it (tests/server/jobs/test_rebase.py checks what that means), and
    # every user is answered by it now.
    assert second["rebase"]["status"] == "rebased" and store.get_meta("current_model") == "m-good"
    assert api.get("/readyz").get_json()["model_version"] == "m-good"
    versions = {api.get(f"/v1/recommendations?user_id={u}&k=5").get_json()["model_version"] for u in tastes.users[:50]}
    assert versions == {"m-good"}


def test_widening_starts_a_new_stage_and_the_last_stage_promotes(tmp_path):
    """The staged plan on the registry alone: 5% -> 25% -> 50% -> live; a share never narrows."""
    store = open_store(Config(home=tmp_path))
    reg = Registry(tmp_path)
    reg.register("m1", state="live")
    reg.register("m2")
    ro = reg.start_canary("m2", 0.05, log_position=7)
    assert ro["stage_from"] == 7
    reg.record_decision({"action": "widen", "look": 1}, share=0.25, log_position=40)
    assert reg.rollout()["stage_from"] == 40 and reg.rollout()["share"] == 0.25
    with pytest.raises(ValidationError):
        reg.record_decision({"action": "widen"}, share=1.0)  # 100% is a promotion, not a stage
    assert rollout.check(tmp_path, store)["action"] == "wait"  # no users: not a look
    assert not any("look" in d and d["look"] == 2 for d in reg.rollout()["decisions"])
    store.close()


def test_stages_setting_is_checked():
    assert parse_stages("0.05, 0.25,0.5") == (0.05, 0.25, 0.5)
    for bad in ("0.5,0.25", "0,0.5", "0.05,1", "abc", ""):
        with pytest.raises(Exception) as err:
            Config(canary_stages=bad).check()
        assert getattr(err.value, "field", "") == "POCKETRANK_CANARY_STAGES"


def test_canary_commands(home):
    store = open_store(Config(home=home))
    derive_version(home, store, "m-next")
    store.close()
    run = CliRunner().invoke
    out = run(main, ["canary", "register", "--home", str(home), "m-next"])
    assert out.exit_code == 0 and "candidate" in out.output, out.output
    assert run(main, ["canary", "start", "--home", str(home), "m-missing"]).exit_code == 1
    out = run(main, ["canary", "start", "--home", str(home), "m-next", "--share", "0.05"])
    assert out.exit_code == 0 and "m-next-canary-1" in out.output, out.output
    out = run(main, ["canary", "check", "--home", str(home)])
    assert out.exit_code == 0 and '"action": "wait"' in out.output, out.output
    out = run(main, ["canary", "status", "--home", str(home)])
    assert out.exit_code == 0 and '"rollout_id": "m-next-canary-1"' in out.output
    assert run(main, ["canary", "start", "--home", str(home), "m-next", "--share", "1.5"]).exit_code == 1


def test_a_version_saved_by_training_gets_its_vectors_file_when_shadowed(home):
    """`pocketrank train`/`retrain` save model.pt only; the item vectors are extracted once, off the request path."""
    store = open_store(Config(home=home))
    live = store.get_meta("current_model")
    shutil.copytree(home / "models" / live, home / "models" / "m-torch")
    assert not (home / "models" / "m-torch" / VECTORS_FILE).exists()
    run = CliRunner().invoke
    assert run(main, ["canary", "register", "--home", str(home), "m-torch", "--parent", live]).exit_code == 0
    out = run(main, ["shadow", "start", "--home", str(home), "m-torch", "--sample", "0.2"])
    assert out.exit_code == 0 and "m-torch on 20%" in out.output, out.output
    ids, vecs = version_vectors(home / "models" / "m-torch")
    store_ids, store_vecs = store.item_vectors()
    assert np.array_equal(ids, store_ids) and np.allclose(vecs, store_vecs, atol=1e-6)
    assert Registry(home).shadow()["version"] == "m-torch"
    out = run(main, ["shadow", "stop", "--home", str(home)])
    assert out.exit_code == 0 and Registry(home).shadow() is None
    store.close()


def test_a_rollout_reads_only_the_log_after_its_start(store):
    """On both stores: log_head marks where a rollout starts, events_after reads only what follows."""
    from pocketrank.shared.schemas import Event

    assert source.log_head(store) == 0 and source.events_after(store, 0) == []
    before = [Event(f"b{i}", "u1", "d", "click", 1000.0 + i, 1) for i in range(3)]
    store.append_events(before)
    head = source.log_head(store)
    assert head > 0 and source.events_after(store, head) == []
    after = [Event(f"a{i}", "u2", "d", "impression", 2000.0 + i, 2, context=(("model_version", "m2"),))
             for i in range(4)]
    store.append_events(after)
    assert [e.event_id for e in source.events_after(store, head)] == ["a0", "a1", "a2", "a3"]
    assert source.events_after(store, head)[0].context == (("model_version", "m2"),)
    assert [e.event_id for e in source.events_after(store, head, limit=2)] == ["a2", "a3"]
    assert source.log_head(store) > head
