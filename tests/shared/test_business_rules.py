"""The server's score adjustments and slots (shared/rules.py), against hand-computed values."""

import math

from pocketrank.shared.rules import adjust_scores, exposure_penalty, pick_exploration, place_exploration, place_pins


def test_exposure_penalty_starts_at_the_cap_and_grows_per_doubling():
    assert exposure_penalty(900, 1000, 0.1) == 0.0
    assert exposure_penalty(1000, 1000, 0.1) == 0.0
    assert math.isclose(exposure_penalty(2000, 1000, 0.1), 0.1)
    assert math.isclose(exposure_penalty(8000, 1000, 0.1), 0.3)
    assert exposure_penalty(8000, 0, 0.1) == exposure_penalty(8000, 1000, 0) == 0.0


def test_adjustments_boost_then_add_interest_then_penalise():
    got = adjust_scores([1, 2, 3], [0.5, 0.4, 0.3], boosts={2: 2.0}, exposures={3: 4000}, exposure_cap=1000,
                        exposure_strength=0.05, category={1: "a", 2: "b", 3: "a"},
                        category_share={"a": 0.5}, category_weight=0.2)
    assert [round(x, 6) for x in got] == [0.6, 0.8, 0.3]  # 0.3 + 0.2 * 0.5 - 0.05 * log2(4)
    assert adjust_scores([1], [0.5]) == [0.5]


def test_pins_go_first_in_order_without_repeats():
    ranked = [(1, 0.9), (2, 0.8), (3, 0.7)]
    assert place_pins(ranked, [(3, 0.7), (9, 0.0)], 3) == [(3, 0.7), (9, 0.0), (1, 0.9)]
    assert place_pins(ranked, [], 2) == [(1, 0.9), (2, 0.8)]


def test_the_exploration_item_takes_its_slot_or_the_end():
    ranked = [(1, 0.9), (2, 0.8), (3, 0.7)]
    assert place_exploration(ranked, (7, 0.1), 2, 3) == [(1, 0.9), (7, 0.1), (2, 0.8)]
    assert place_exploration(ranked[:1], (7, 0.1), 3, 3) == [(1, 0.9), (7, 0.1)]
    assert place_exploration(ranked, (2, 0.8), 1, 3) == ranked
    assert place_exploration(ranked, None, 1, 3) == ranked


def test_exploration_prefers_new_products_then_the_least_shown():
    pool = [10, 11, 12, 13, 14, 15, 16, 17]
    assert pick_exploration(pool, {13, 16}, {}, 0.0) == 13 and pick_exploration(pool, {13, 16}, {}, 0.99) == 16
    shown = {i: 100 for i in pool} | {15: 1, 12: 2}
    assert {pick_exploration(pool, set(), shown, u) for u in (0.0, 0.99)} == {15, 12}
    assert pick_exploration([], {1}, {}, 0.5) is None
