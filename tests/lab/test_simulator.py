"""The synthetic marketplace simulator: contracts, behaviour and determinism."""

from __future__ import annotations

import dataclasses
import itertools
import json
import random
import types
from collections import Counter
from functools import partial

import numpy as np
import pytest

from lab.simulator import (
    CATEGORIES,
    MarketplaceSimulator,
    SimConfig,
    is_bounce,
    session_revenue,
)
from pocketrank.shared.errors import ValidationError
from pocketrank.shared.features import tokens
from pocketrank.shared.schemas import validate_event, validate_item
from tests.factories import event

SMALL = SimConfig(n_users=400, n_items=300, n_days=6, new_items_per_day=4, seed=3)


@pytest.fixture(scope="module")
def sim():
    return MarketplaceSimulator(SMALL)


@pytest.fixture(scope="module")
def sessions(sim):
    return list(sim.sessions())


@pytest.fixture(scope="module")
def events(sim):
    return list(sim.events())


def slates_of(session):
    """(impressions, clicked item ids) per slate.

    A slate's impressions are shown together, milliseconds apart; its clicks are
    the ones before the next slate (the same item may show again in a later slate).
    """
    out, prev = [], None
    for e in session:
        if e.type == "impression":
            if prev is None or prev.type != "impression" or e.timestamp - prev.timestamp > 0.5:
                out.append(([], set()))
            out[-1][0].append(e)
        elif e.type == "click":
            out[-1][1].add(e.item_id)
        prev = e
    return out


ev = partial(event, user="s1", device="dev-s1", ts=1.0, session="x")


def test_same_seed_gives_identical_bytes_and_other_seeds_differ():
    cfg = SimConfig(n_users=150, n_items=120, n_days=3, seed=11)

    def dump(c):
        return json.dumps([e.to_dict() for e in MarketplaceSimulator(c).events()]).encode()

    first = dump(cfg)
    assert first == dump(cfg)
    assert first != dump(SimConfig(n_users=150, n_items=120, n_days=3, seed=12))


def test_every_event_validates_and_all_types_occur(events):
    assert len(events) > 5_000
    # The simulator's events are the server's own form (item = the store's index); on the wire the
    # item is the product's id, here the index's digits (the simulator's catalogue has no SKUs).
    for e in events:
        assert validate_event(e.to_dict()) == dataclasses.replace(e, item_id=None if e.item_id is None
                                                                  else str(e.item_id))
    assert set(Counter(e.type for e in events)) >= {"impression", "click", "search", "add_to_cart", "purchase"}
    assert len({e.event_id for e in events}) == len(events)
    assert all(e.user_id.startswith("s") and e.device_id == f"dev-{e.user_id}" for e in events)


def test_events_are_time_ordered_and_sessions_stay_inside_one_day(sim, sessions, events):
    ts = [e.timestamp for e in events]
    assert all(a <= b for a, b in zip(ts, ts[1:]))
    assert Counter(e.event_id for s in sessions for e in s) == Counter(e.event_id for e in events)
    starts = [s[0].timestamp for s in sessions]
    assert starts == sorted(starts)
    ids = set()
    for s in sessions:
        assert len({e.session_id for e in s}) == 1 and len({e.user_id for e in s}) == 1
        assert all(a.timestamp < b.timestamp for a, b in zip(s, s[1:]))
        days = {int((e.timestamp - SMALL.start_time) // 86_400) for e in s}
        assert len(days) == 1 and 0 <= days.pop() < SMALL.n_days
        ids.add(s[0].session_id)
    assert len(ids) == len(sessions)


def test_clicks_follow_impressions_and_purchases_follow_carts(sessions):
    for s in sessions:
        shown, clicked, carted = set(), set(), set()
        for e in s:
            if e.type == "impression":
                shown.add(e.item_id)
            elif e.type == "click":
                assert e.item_id in shown
                clicked.add(e.item_id)
            elif e.type == "add_to_cart":
                assert e.item_id in clicked
                carted.add(e.item_id)
            elif e.type == "purchase":
                assert e.item_id in carted


def test_search_queries_name_a_category_or_match_a_title(sim, sessions):
    titles = {i.item_id: i.title for i in sim.items}
    searches = [s for s in sessions if s[0].type == "search"]
    assert 0.1 < len(searches) / len(sessions) < 0.4
    kinds = Counter()
    for s in searches:
        q = s[0].query
        if q in CATEGORIES:
            kinds["category"] += 1
            # Search results come from the searched category.
            assert all(sim.items[e.item_id - 1].category == q for e in s if e.type == "impression")
        else:
            kinds["title"] += 1
            item = int(q.split()[-1])
            assert set(tokens(q)) <= set(tokens(titles[item]))
            assert next(e for e in s if e.type == "impression").item_id == item
    assert kinds["category"] > 0 and kinds["title"] > 0


def test_ctr_is_plausible_and_rises_with_true_click_probability(sim, sessions):
    probs, clicked, top_probs, top_clicked = [], [], [], []
    for s in sessions:
        for slate, clicks in slates_of(s):
            for pos, e in enumerate(slate):
                p = sim.true_click_prob(e.user_id, e.item_id, e.timestamp)
                assert 0.0 < p < 1.0
                probs.append(p)
                clicked.append(e.item_id in clicks)
                if pos == 0:  # the top slot carries no position penalty
                    top_probs.append(p)
                    top_clicked.append(e.item_id in clicks)
    probs, clicked = np.array(probs), np.array(clicked)
    ctr = clicked.mean()
    assert 0.02 < ctr < 0.15
    quartile = np.searchsorted(np.quantile(probs, [0.25, 0.5, 0.75]), probs)
    by_q = [clicked[quartile == q].mean() for q in range(4)]
    assert by_q == sorted(by_q) and by_q[3] > 3 * by_q[0], by_q
    # The top slot carries no position penalty, so there the model is the truth.
    obs, pred = np.mean(top_clicked), np.mean(top_probs)
    assert abs(obs - pred) < 4 * np.sqrt(pred * (1 - pred) / len(top_probs)), (obs, pred)


def test_lower_slots_get_fewer_clicks(sessions):
    shown, hits = Counter(), Counter()
    for s in sessions:
        for slate, clicks in slates_of(s):
            for pos, e in enumerate(slate):
                shown[pos] += 1
                hits[pos] += e.item_id in clicks
    assert hits[0] / shown[0] > 1.5 * hits[9] / shown[9]


def test_bounce_rate_and_revenue_are_plausible(sim, sessions):
    rate = np.mean([is_bounce(s) for s in sessions])
    assert 0.2 < rate < 0.7
    prices = sim.prices
    revenue = sum(session_revenue(s, prices) for s in sessions)
    assert revenue == pytest.approx(sum(prices[e.item_id] for s in sessions for e in s if e.type == "purchase"))
    assert revenue > 0


def test_popularity_is_skewed_under_the_default_policy(sim, events):
    shown = Counter(e.item_id for e in events if e.type == "impression")
    counts = sorted(shown.values(), reverse=True) + [0] * (len(sim.items) - len(shown))
    top = len(sim.items) // 10
    assert sum(counts[:top]) / sum(counts) > 0.4


def test_new_items_arrive_after_day_zero_and_never_show_early(sim, events):
    c = SMALL
    assert len(sim.items) == c.n_items + (c.n_days - 1) * c.new_items_per_day
    new = [e for e in events if e.item_id is not None and e.item_id > c.n_items]
    assert new, "no new item was ever shown"
    assert all(e.timestamp >= sim.arrival_time(e.item_id) > c.start_time for e in new)
    assert sim.arrival_time(1) == c.start_time


def test_tastes_drift_over_days(sim):
    def probs(sim, day, hour=0):
        t = SMALL.start_time + 86_400 * day + 3_600 * hour
        return np.array([sim.true_click_prob(f"s{u}", i, t) for u in range(1, 40) for i in range(1, 40)])

    early = probs(sim, 0)
    assert np.array_equal(early, probs(sim, 0, hour=20))  # tastes move once a day
    late = probs(sim, 5)
    assert np.abs(late - early).mean() > 5e-4
    assert np.corrcoef(early, late)[0, 1] > 0.95  # a slow walk, not a reshuffle
    still = MarketplaceSimulator(dataclasses.replace(SMALL, drift_per_day=0.0))
    assert np.abs(probs(still, 5) - probs(still, 0)).max() < 1e-6


def test_catalogue_and_users_are_well_formed(sim):
    items = sim.items
    assert [i.item_id for i in items] == list(range(1, len(items) + 1))
    for it in items:
        # On the wire a product is its own id (the index's digits here); validating gives it index 0
        # until a store assigns one.
        assert it.to_dict()["item_id"] == str(it.item_id)
        assert validate_item(it.to_dict()) == dataclasses.replace(it, item_id=0, sku=str(it.item_id))
        assert it.title == f"Sim product {it.item_id} ({it.category})"
        assert it.category in CATEGORIES[: SMALL.n_categories] and it.price > 0 and it.year is None
    assert 0.85 < np.mean([i.in_stock for i in items]) < 1.0
    assert len({i.category for i in items}) == SMALL.n_categories
    users = sim.users
    assert [u["user_id"] for u in users] == [f"s{n}" for n in range(1, SMALL.n_users + 1)]
    assert all(set(u["segment"]) == {"age_band", "gender", "region"} for u in users)


def test_policy_is_called_and_its_slate_is_what_gets_impressed():
    sim = MarketplaceSimulator(SimConfig(n_users=120, n_items=150, n_days=3, seed=5))
    in_stock = {i.item_id for i in sim.items if i.in_stock}
    calls = {}

    def newest_first(user_id, candidates, t, k):
        assert k in (10, 9)  # 9 after a product search, whose hit takes the top slot
        assert candidates == sorted(candidates) and set(candidates) <= in_stock
        assert all(sim.arrival_time(c) <= t for c in candidates)
        calls[(user_id, t)] = candidates[::-1][:k]
        return calls[(user_id, t)]

    sessions = list(sim.sessions(policy=newest_first))
    assert calls
    slates = 0
    for s in sessions:
        pinned = s[0].type == "search" and s[0].query not in CATEGORIES
        for n, (slate, _) in enumerate(slates_of(s)):
            expected = list(calls[(s[0].user_id, slate[0].timestamp)])
            if pinned and n == 0:  # a product search shows its hit first, then the policy's slate
                expected.insert(0, int(s[0].query.split()[-1]))
            assert [e.item_id for e in slate] == expected
            slates += 1
    assert slates == len(calls)


def test_policy_that_knows_tastes_beats_popularity():
    cfg = SimConfig(n_users=200, n_items=200, n_days=3, seed=9)
    sim = MarketplaceSimulator(cfg)
    rng = random.Random(0)

    def oracle(user_id, candidates, t, k):
        pool = rng.sample(candidates, min(60, len(candidates)))
        return sorted(pool, key=lambda i: -sim.true_click_prob(user_id, i, t))[:k]

    def run(policy):
        ss = list(sim.sessions(policy))
        imps = sum(e.type == "impression" for s in ss for e in s)
        ctr = sum(e.type == "click" for s in ss for e in s) / imps
        return ctr, np.mean([is_bounce(s) for s in ss]), [(s[0].user_id, s[0].timestamp) for s in ss]

    pop_ctr, pop_bounce, pop_starts = run(None)
    ora_ctr, ora_bounce, ora_starts = run(oracle)
    assert ora_ctr > 1.5 * pop_ctr and ora_bounce < pop_bounce
    assert ora_starts == pop_starts  # same seed, same users and sessions: only the slates differ


def test_a_policy_returning_unknown_items_is_refused():
    sim = MarketplaceSimulator(SimConfig(n_users=20, n_items=30, n_days=1))
    with pytest.raises(ValidationError, match="taken from the candidates"):
        next(sim.events(policy=lambda u, c, t, k: [10_000]))
    with pytest.raises(ValidationError, match="distinct item ids"):
        next(sim.events(policy=lambda u, c, t, k: [c[0], c[0]]))


@pytest.mark.slow
def test_streams_lazily_at_large_scale():
    big = MarketplaceSimulator(SimConfig(n_users=100_000, n_items=5_000, n_days=10_000))
    stream = big.events()
    assert isinstance(stream, types.GeneratorType)
    first = list(itertools.islice(stream, 2_000))
    assert len(first) == 2_000 and first[-1].timestamp < SimConfig().start_time + 86_400


def test_is_bounce_on_hand_made_sessions():
    assert is_bounce([ev("impression", 1), ev("impression", 2)])
    assert is_bounce([ev("search", query="Garden"), ev("impression", 1)])
    assert not is_bounce([ev("impression", 1), ev("click", 1)])
    assert not is_bounce([ev("search", query="Garden")])
    assert not is_bounce([])
    assert is_bounce([{"type": "impression", "item_id": 3}])


def test_session_revenue_on_hand_made_sessions():
    s = [ev("impression", 1), ev("click", 1), ev("add_to_cart", 1), ev("purchase", 1), ev("purchase", 2)]
    assert session_revenue(s, {1: 10.0, 2: 2.5}) == 12.5
    assert session_revenue(s[:3], {}) == 0.0
    with pytest.raises(ValidationError):
        session_revenue(s, {1: 10.0})


def test_config_is_checked():
    with pytest.raises(ValidationError, match="n_categories"):
        SimConfig(n_categories=len(CATEGORIES) + 1)
    with pytest.raises(ValidationError, match="n_users"):
        SimConfig(n_users=0)
    with pytest.raises(ValidationError, match="seed"):
        SimConfig(seed=1.5)
    with pytest.raises(ValidationError, match="user_id"):
        MarketplaceSimulator(SimConfig(n_users=5, n_items=5, n_days=1)).true_click_prob("s6", 1, 0.0)
