"""The collector's figures on hand-made sessions, checked against hand-computed values."""

from __future__ import annotations

import pytest

from lab.simulator import MarketplaceSimulator, SimConfig, is_bounce, session_revenue
from pocketrank.server.monitoring import collector
from tests.factories import event

PRICES = {1: 10.0, 2: 5.0, 3: 2.5}


def sessions():
    rows = [  # user, type, item, seconds, session id, context
        # a: two impressions, one click, a purchase of item 1 (10.0); served by the server, android
        ("a", "impression", 1, 0, "sa", dict(source="server", platform="android")),
        ("a", "impression", 2, 1, "sa", dict(source="server", platform="android")),
        ("a", "click", 1, 2, "sa", dict()),
        ("a", "purchase", 1, 3, "sa", dict()),
        # b: three impressions and no click: a bounce; on the device, offline
        ("b", "impression", 1, 10, "sb", dict(source="edge", connectivity="offline", platform="ios")),
        ("b", "impression", 2, 11, "sb", dict(source="edge", connectivity="offline", platform="ios")),
        ("b", "impression", 3, 12, "sb", dict(source="edge", connectivity="offline", platform="ios")),
        # b again, without a session id: one view then a cart, then (45 minutes on) a lone view
        ("b", "view", 2, 100, "", dict()),
        ("b", "add_to_cart", 2, 130, "", dict()),
        ("b", "view", 3, 100 + 2700, "", dict()),
        # c: only a search: not a shown session, so outside the bounce rate's denominator
        ("c", "search", None, 5, "sc", dict()),
    ]
    return [event(etype, item, user=user, device=f"d-{user}", ts=1_800_000_000 + t, session=session, context=context,
                  query="shoes" if etype == "search" else None) for user, etype, item, t, session, context in rows]


def test_overall_figures_by_hand():
    o = collector.summarize(sessions(), PRICES)["overall"]
    assert (o["impressions"], o["clicks"], o["purchases"], o["users"]) == (5, 1, 1, 3)
    assert o["ctr"] == pytest.approx(1 / 5)
    assert o["sessions"] == 5  # sa, sb, sc and b's two loose sessions split by the 30-minute gap
    # shown sessions: sa, sb, b-loose-1 (view + cart: engaged), b-loose-2 (lone view: bounce)
    assert o["bounces"] == 2 and o["bounce_rate"] == pytest.approx(2 / 4)
    assert o["conversion"] == pytest.approx(1 / 5)
    assert o["revenue"] == 10.0 and o["revenue_per_user"] == pytest.approx(10.0 / 3)


def test_per_segment_an_event_inherits_its_sessions_context():
    by = collector.summarize(sessions(), PRICES, user_segments={"a": "18-24", "b": "55+"})["by_segment"]
    server, edge = by["source"]["server"], by["source"]["edge"]
    assert (server["impressions"], server["clicks"], server["ctr"]) == (2, 1, 0.5)  # the click has no context
    assert server["revenue_per_user"] == 10.0 and server["bounce_rate"] == 0.0
    assert (edge["impressions"], edge["clicks"], edge["bounce_rate"]) == (3, 0, 1.0)
    assert by["connectivity"]["offline"]["sessions"] == 1
    assert set(by["platform"]) == {"android", "ios", "unknown"}
    assert by["segment"]["18-24"]["ctr"] == 0.5 and by["segment"]["55+"]["users"] == 1
    assert "model_version" not in by  # no event carries it: no all-unknown breakdown


def test_timeseries_buckets_sessions_by_start_and_adds_up():
    evs = sessions()
    series = collector.timeseries(evs, 60.0, PRICES)
    assert sum(b["sessions"] for b in series) == 5
    assert sum(b["impressions"] for b in series) == 5
    assert [b["start"] for b in series] == sorted(b["start"] for b in series)
    with pytest.raises(ValueError):
        collector.timeseries(evs, 0)


def test_matches_the_simulators_own_bounce_and_revenue():
    sim = MarketplaceSimulator(SimConfig(n_users=200, n_items=200, n_days=3, seed=5))
    sess = list(sim.sessions())
    evs = [e for s in sess for e in s]
    o = collector.summarize(evs, sim.prices)["overall"]
    assert o["bounces"] == sum(is_bounce(s) for s in sess)
    assert o["revenue"] == pytest.approx(sum(session_revenue(s, sim.prices) for s in sess), abs=0.01)
    assert o["sessions"] == len(sess)
    units = collector.per_user(evs, sim.prices)
    assert sum(u.clicks for u in units.values()) == o["clicks"]
    assert sum(u.bounces for u in units.values()) == o["bounces"]
