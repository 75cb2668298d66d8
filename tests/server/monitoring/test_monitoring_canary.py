"""Stable assignment, the significance rule, and a broken model rolled back at 5%."""

from __future__ import annotations

import numpy as np
import pytest

from lab.simulate import CanaryPolicy, FeedbackSimulator, fit_item_model, item_categories, warmup
from lab.simulator import SimConfig
from pocketrank.server.monitoring import collector
from pocketrank.server.monitoring.collector import UnitStats
from pocketrank.server.release import canary
from pocketrank.server.release.registry import Registry
from pocketrank.shared.errors import ValidationError

pytestmark = pytest.mark.slow  # see `make test-fast`


def test_the_same_user_always_lands_in_the_same_arm():
    assert canary.bucket("u1", "r1") == canary.bucket("u1", "r1")
    assert canary.bucket("u1", "r1") != canary.bucket("u1", "r2")
    assert 0.0 <= canary.bucket("anyone", "r") < 1.0


def test_the_share_is_five_percent_over_100k_users_and_widening_only_adds():
    ids = [f"user-{i}" for i in range(100_000)]
    at5 = {u for u in ids if canary.in_canary(u, "m2-canary-1", 0.05)}
    at25 = {u for u in ids if canary.in_canary(u, "m2-canary-1", 0.25)}
    # binomial sd at 5% of 100k is 69 users: 4 sd either side
    assert abs(len(at5) - 5000) < 280
    assert at5 <= at25 and abs(len(at25) - 25_000) < 550


def test_the_critical_value_is_bonferroni_over_looks_metrics_and_sides():
    assert canary.Rule().z_crit == pytest.approx(3.227, abs=1e-3)  # one-sided 0.05 / 80
    assert canary.Rule(max_looks=1).z_crit == pytest.approx(2.241, abs=1e-3)  # 0.05 / 4


def _units(n, ctr, bounce, imps=20, sessions=2, seed=0):
    rng = np.random.default_rng(seed)
    return [UnitStats(int(rng.binomial(imps, ctr)), imps, sessions, int(rng.binomial(sessions, bounce)))
            for _ in range(n)]


def test_the_rule_rolls_back_harm_promotes_equals_and_waits_when_unsure():
    control = canary.ArmStats.from_units(_units(4000, 0.08, 0.3, seed=1))
    worse = canary.ArmStats.from_units(_units(300, 0.04, 0.5, seed=2))
    same = canary.ArmStats.from_units(_units(3000, 0.08, 0.3, seed=3))
    few = canary.ArmStats.from_units(_units(10, 0.08, 0.3, seed=4))
    assert canary.decide(control, worse, look=1).action == "rollback"
    assert canary.decide(control, same, look=1, rule=canary.Rule(margin=0.1)).action == "promote"
    assert canary.decide(control, few, look=1).action == "continue"
    assert canary.decide(control, few, look=20).action == "rollback"  # never shown safe


def test_the_delta_method_is_wider_than_a_binomial_when_users_differ():
    rng = np.random.default_rng(5)
    # half the users click a lot, half never: impressions within a user are not independent
    clicks = np.where(rng.random(2000) < 0.5, 8, 0)
    r = canary.ratio(clicks, np.full(2000, 20))
    binomial = np.sqrt(r.value * (1 - r.value) / 40_000)
    assert r.se > 2 * binomial


def test_registry_states_and_rollout(tmp_path):
    reg = Registry(tmp_path)
    reg.register("m1", {"hr@10": 0.11}, {"data": "warm-up"}, state="live")
    reg.register("m2", {"hr@10": 0.12}, {"parent": "m1"})
    ro = reg.start_canary("m2", 0.05)
    assert ro["rollout_id"] == "m2-canary-1" and ro["control"] == "m1"
    with pytest.raises(ValidationError):
        reg.start_canary("m2", 0.05)
    served = {reg.model_for(f"u{i}") for i in range(400)}
    assert served == {"m1", "m2"}
    reg.record_decision({"action": "continue"}, share=0.25)
    with pytest.raises(ValidationError):
        reg.record_decision({"action": "continue"}, share=0.1)
    reg.rollback("m2", "CTR z=-5")
    assert reg.get("m2")["state"] == "retired" and reg.rollout() is None and reg.live() == "m1"
    reg.register("m3", {}, {"parent": "m1"})
    reg.start_canary("m3", 0.05)
    reg.promote("m3", "non-inferior")
    assert reg.live() == "m3" and reg.get("m1")["state"] == "retired"
    assert [h["version"] for h in reg.load()["history"]][-1] == "m3"


def test_a_broken_model_at_five_percent_is_rolled_back_before_it_widens(tmp_path):
    """Shuffled item vectors as a canary at 5%: the daily look rolls it back at 5%, never wider."""
    cfg = SimConfig(n_users=3000, n_items=500, n_days=14, seed=21)
    warm_days = 6
    sim, history = warmup(cfg, warm_days)
    good = fit_item_model(history, item_categories(sim), cfg.n_categories, steps=80)
    reg = Registry(tmp_path)
    reg.register("m1", {}, {"trained_on": f"days 0-{warm_days - 1}"}, state="live")
    reg.register("m2-broken", {}, {"parent": "m1", "note": "item vectors shuffled"})
    ro = reg.start_canary("m2-broken", 0.05)
    plan = [0.05, 0.25, 0.5, 1.0]
    policy = CanaryPolicy(good, good.shuffled(seed=1), history, rollout_id=ro["rollout_id"], share=plan[0],
                          canary_version="m2-broken")
    fs = FeedbackSimulator(cfg, first_day=warm_days)
    day_start = cfg.start_time + 86_400 * warm_days
    log, look, outcome, widest = [], 0, None, plan[0]
    for session in fs.sessions(policy):
        if session[0].timestamp >= day_start + 86_400:  # a day is over: look
            look += 1
            day_start += 86_400
            d = canary.decide(*canary.split_units(collector.per_user(log), ro["rollout_id"], policy.share), look)
            reg.record_decision(d.to_dict())
            if d.action == "rollback":
                reg.rollback("m2-broken", d.reason)
                outcome, policy.share = d, 0.0
                break
            if d.action == "promote":
                policy.share = widest = plan[plan.index(policy.share) + 1]
                reg.record_decision({"action": "widen"}, share=policy.share)
        log.extend(session)
    assert outcome is not None and outcome.action == "rollback", "the broken canary was never rolled back"
    assert widest == 0.05 and look <= 3
    assert outcome.ctr_canary < outcome.ctr_control and outcome.z_ctr <= -outcome.z_crit
    assert all(canary.in_canary(u, ro["rollout_id"], 0.05) for u in policy.exposed)
    assert len(policy.exposed) <= 0.08 * cfg.n_users
    assert reg.get("m2-broken")["state"] == "retired" and reg.live() == "m1"
