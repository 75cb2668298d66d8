"""Shadow mode: a candidate ranks a sample of requests beside the served model and is never served."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from lab.served_models import Tastes, derive_version, post_all, session_events
from pocketrank.server.api.app import create_app
from pocketrank.server.config import Config
from pocketrank.server.monitoring import source
from pocketrank.server.release import shadow
from pocketrank.server.release.registry import Registry
from pocketrank.server.stores import open_store
from pocketrank.shared.errors import ValidationError
from pocketrank.shared.schemas import Event


def test_compare_and_hit_rates_by_hand():
    c = shadow.compare("u", 10.0, [1, 2, 3, 4], [0.9, 0.8, 0.7, 0.6], [2, 1, 9, 8], [0.8, 0.9, 0.1, 0.0])
    assert c.overlap == 0.5  # {1, 2} of 4
    # served scores order 1>2>3>4; shadow's 2>1>3>4: one discordant pair of six -> tau = (5 - 1) / 6
    assert c.tau == pytest.approx(4 / 6)
    later = shadow.compare("u", 20.0, [5, 6], [0.5, 0.4], [7, 6], [0.2, 0.3])
    clicks = [Event("e1", "u", "d", "click", 11.0, 2), Event("e2", "u", "d", "click", 12.0, 3),
              Event("e3", "u", "d", "click", 21.0, 7), Event("e0", "u", "d", "click", 5.0, 1),  # before any
              Event("e4", "v", "d", "click", 30.0, 5), Event("e5", "u", "d", "impression", 22.0, 6)]
    # clicks after the first request: 2 (both lists), 3 (served only); after the second: 7 (shadow only)
    assert shadow.hit_rates([c, later], clicks) == {"clicks": 3, "served": 2 / 3, "shadow": 2 / 3}
    assert shadow.hit_rates([], clicks) == {"clicks": 0, "served": None, "shadow": None}


def test_a_full_queue_drops_comparisons_instead_of_waiting():
    runner = shadow.ShadowRunner(max_pending=2)
    target = runner.log_for(("m", 1.0))
    gate = threading.Event()

    def slow():
        gate.wait(5)
        return shadow.compare("u", 0.0, [1], [1.0], [1], [1.0])

    accepted = [runner.submit(target, slow) for _ in range(5)]
    assert accepted == [True, True, False, False, False] and target.dropped == 3
    gate.set()
    assert runner.flush(5)
    assert target.figures()["compared"] == 2
    runner.submit(target, lambda: 1 / 0)  # a failing shadow is counted, never raised
    assert runner.flush(5) and target.failed == 1
    runner.close()


@pytest.fixture
def shadowed(home):
    store = open_store(Config(home=home))
    derive_version(home, store, "m-good")
    derive_version(home, store, "m-broken", shuffle_seed=1)
    reg = Registry(home)
    for v in ("m-good", "m-broken"):
        reg.register(v)
    app = create_app(Config(home=home))
    yield app, store, reg, Tastes(store)
    store.close()


def run_users(app, store, tastes, users, tag, seed=0):
    api = app.test_client()
    rng = np.random.default_rng(seed)
    bodies = {u: api.get(f"/v1/recommendations?user_id={u}&k=10").get_json() for u in users}
    app.extensions["pocketrank"].shadow.flush(30)
    post_all(api, [e for u, b in bodies.items() for e in session_events(u, b, tastes, rng, tag)])
    return bodies


@pytest.mark.slow
def test_shadow_scores_requests_never_serves_and_reports_agreement_and_hits(shadowed):
    app, store, reg, tastes = shadowed
    api = app.test_client()
    live = store.get_meta("current_model")
    assert api.get("/v1/metrics/shadow").get_json() == {"shadow": None}
    reg.start_shadow("m-broken", 1.0, source.log_head(store))
    users = tastes.users[:300]
    bodies = run_users(app, store, tastes, users, "sb")
    assert {b["model_version"] for b in bodies.values()} == {live}  # never served
    rep = api.get("/v1/metrics/shadow").get_json()["shadow"]
    assert rep["version"] == "m-broken" and rep["served_model"] == live
    assert rep["compared"] == len(users) and rep["dropped"] == 0 and rep["failed"] == 0
    assert rep["overlap"] < 0.2 and abs(rep["kendall_tau"]) < 0.5
    hits = rep["hit_rate"]
    assert hits["clicks"] > 100 and hits["served"] == 1.0 and hits["shadow"] < 0.2
    text = api.get("/metrics?window=3600").get_data(as_text=True)
    assert 'pocketrank_shadow_overlap{version="m-broken"}' in text
    assert 'pocketrank_shadow_hit_rate{model="shadow",version="m-broken"}' in text

    # A new shadow starts a new log; an identical copy agrees with the served model.
    reg.start_shadow("m-good", 0.5, source.log_head(store))
    run_users(app, store, tastes, users, "sg")
    rep = api.get("/v1/metrics/shadow").get_json()["shadow"]
    assert rep["version"] == "m-good" and 0.3 * len(users) < rep["compared"] < 0.7 * len(users)
    assert rep["overlap"] > 0.9 and rep["kendall_tau"] > 0.9
    summary = api.get("/v1/metrics/summary?window=3600").get_json()
    assert summary["shadow"]["version"] == "m-good"
    reg.stop_shadow()
    assert api.get("/v1/metrics/shadow").get_json() == {"shadow": None}


def test_shadow_needs_a_registered_candidate(shadowed):
    app, store, reg, _ = shadowed
    with pytest.raises(ValidationError):
        reg.start_shadow("m-unknown", 0.1)
    with pytest.raises(ValidationError):
        reg.start_shadow("m-good", 0.0)
    assert app.test_client().get("/v1/metrics/shadow?limit=abc").status_code == 400
