"""Window aggregates (shared/features.py): what the features job stores and training can reuse."""

from pocketrank.shared.features import category_shares, window_aggregates

DAY = 86_400.0
NOW = 1_700_000_000.0


def test_each_event_counts_in_every_window_it_falls_in():
    events = [
        (NOW - 0.5 * DAY, "click", "Books", 10.0),
        (NOW - 0.5 * DAY, "impression", "Books", 10.0),
        (NOW - 0.6 * DAY, "impression", "Toys", 3.0),
        (NOW - 3 * DAY, "purchase", "Toys", 20.0),
        (NOW - 20 * DAY, "view", "Books", 5.0),
        (NOW - 40 * DAY, "purchase", "Books", 99.0),  # older than every window
        (NOW + 10, "click", "Books", 1.0),  # after as_of: never seen (no leakage into training)
        (NOW - 1.0, "search", None, 0.0),
    ]
    agg = window_aggregates(events, NOW)
    assert agg["1d"]["counts"] == {"view": 0, "click": 1, "search": 1, "add_to_cart": 0, "purchase": 0,
                                   "impression": 2}
    assert agg["1d"]["ctr"] == 0.5 and agg["7d"]["ctr"] == 0.5
    assert agg["1d"]["spend"] == 0.0 and agg["7d"]["spend"] == 20.0 and agg["30d"]["spend"] == 20.0
    assert agg["7d"]["categories"] == {"Books": 1.0, "Toys": 3.0}
    assert agg["30d"]["categories"] == {"Books": 1.5, "Toys": 3.0}
    assert window_aggregates([], NOW)["30d"]["ctr"] is None


def test_category_shares_sum_to_one():
    agg = window_aggregates([(NOW - 10, "click", "a", 0.0), (NOW - 10, "purchase", "b", 0.0)], NOW)
    assert category_shares(agg) == {"a": 0.25, "b": 0.75}
    assert category_shares(None) == {} and category_shares(agg, "90d") == {}
