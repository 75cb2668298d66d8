import math

import pytest

from pocketrank.shared.rules import apply_rules, demote_popular, top_by_score


def test_rules_drop_excluded_out_of_stock_and_cap_categories():
    ranked = [(1, 0.9), (2, 0.8), (3, 0.7), (4, 0.6), (5, 0.5)]
    cats = {1: "a", 2: "a", 3: "a", 4: "b", 5: "b"}
    out = apply_rules(ranked, 3, exclude={2}, in_stock={4: False}, category=cats, max_per_category=1)
    assert out == [(1, 0.9), (5, 0.5)]
    assert apply_rules(ranked, 2) == [(1, 0.9), (2, 0.8)]


def test_ties_break_by_item_id():
    assert top_by_score([5, 3, 9], [0.5, 0.5, 0.7]) == [(9, 0.7), (3, 0.5), (5, 0.5)]


def test_the_popularity_knob_divides_the_odds_by_rank_in_the_popular_list():
    popular = [7, 3, 9, 1]  # 7 the most popular; n = 4
    out = demote_popular([1, 2, 3, 7], [0.5, 0.5, 0.8, 0.5], popular, 2.0)
    odds = [p / (1 - p) for p in out]
    assert odds[0] == pytest.approx(math.exp(-2.0 * 1 / 4))  # the 4th of 4: a quarter of the strength
    assert out[1] == 0.5  # not popular: its score exactly
    assert odds[2] == pytest.approx(4.0 * math.exp(-2.0 * 3 / 4))
    assert odds[3] == pytest.approx(math.exp(-2.0))
    assert demote_popular([7], [1.0], popular, 1.0)[0] < 1.0  # a saturated score is tilted too
    assert demote_popular([7, 1], [0.9, 0.9], popular, 1e6) == [0.0, 0.0]  # any finite strength: no overflow
    low = demote_popular([7, 2], [1e-9, 1e-8], popular, 0.5)
    assert low[0] <= 1e-9 < low[1] == 1e-8  # a score below the clamp is never lifted above its neighbours
    assert demote_popular([3], [0.5], [3, 7, 3], 3.0) == demote_popular([3], [0.5], [3, 7, 9], 3.0)  # first rank wins
    assert demote_popular([1, 7], [0.5, 0.25], popular, 0.0) == [0.5, 0.25]  # 0: off
    assert demote_popular([1, 7], [0.5, 0.25], [], 3.0) == [0.5, 0.25]  # no popular list: nothing to demote
