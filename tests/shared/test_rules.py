from pocketrank.shared.rules import apply_rules, top_by_score


def test_rules_drop_excluded_out_of_stock_and_cap_categories():
    ranked = [(1, 0.9), (2, 0.8), (3, 0.7), (4, 0.6), (5, 0.5)]
    cats = {1: "a", 2: "a", 3: "a", 4: "b", 5: "b"}
    out = apply_rules(ranked, 3, exclude={2}, in_stock={4: False}, category=cats, max_per_category=1)
    assert out == [(1, 0.9), (5, 0.5)]
    assert apply_rules(ranked, 2) == [(1, 0.9), (2, 0.8)]


def test_ties_break_by_item_id():
    assert top_by_score([5, 3, 9], [0.5, 0.5, 0.7]) == [(9, 0.7), (3, 0.5), (5, 0.5)]
