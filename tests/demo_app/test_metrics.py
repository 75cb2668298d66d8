"""Operator metrics against hand-computed values."""

from pocketrank.demo_app import metrics


def session():
    lists = [
        {"list_id": 1, "t": 1.0, "user_id": "196", "source": "server", "item_ids": [1, 2, 3, 4], "latency_ms": 5},
        {"list_id": 2, "t": 3.0, "user_id": "196", "source": "edge", "item_ids": [5, 6, 7, 8], "latency_ms": 1},
        {"list_id": 3, "t": 5.0, "user_id": "22", "source": "edge", "item_ids": [9, 10], "latency_ms": 1},
    ]
    events = [
        {"t": 2.0, "type": "click", "list_id": 1, "price": 0.0},
        {"t": 2.5, "type": "purchase", "list_id": 1, "price": 12.5},
        {"t": 4.5, "type": "click", "list_id": 2, "price": 0.0},  # after list 2 was left? no: left at 5.0
        {"t": 5.5, "type": "search", "list_id": None, "price": 0.0},
    ]
    return lists, events


def test_bucket_edges():
    assert metrics.bucket_edges(0.0, 10.0, n=5) == [2.0, 4.0, 6.0, 8.0, 10.0]
    assert metrics.bucket_edges(0.0, 3.0, n=30) == [1.0, 2.0, 3.0]  # never narrower than a second
    assert metrics.bucket_edges(5.0, 5.0) == [6.0]


def test_ctr_per_source_is_cumulative_clicks_over_impressions():
    lists, events = session()
    got = metrics.ctr(lists, events, [2.0, 4.0, 6.0], by="source")
    assert got == {"server": [1 / 4, 1 / 4, 1 / 4], "edge": [None, 0 / 4, 1 / 6]}
    by_user = metrics.ctr(lists, events, [6.0], by="user")
    assert by_user == {"196": [2 / 8], "22": [0 / 2]}


def test_bounce_counts_lists_left_without_engagement():
    lists, events = session()
    # list 1 left at 3.0 (engaged at 2.0), list 2 left at 5.0 (engaged at 4.5), list 3 still on screen
    assert metrics.bounce(lists, events, [2.0, 4.0, 6.0]) == {"server": [None, 0.0, 0.0], "edge": [None, None, 0.0]}
    no_click = [e for e in events if e["list_id"] != 2]
    assert metrics.bounce(lists, no_click, [6.0]) == {"server": [0.0], "edge": [1.0]}


def test_revenue_sums_synthetic_prices_of_purchases():
    lists, events = session()
    assert metrics.revenue(lists, events, [2.0, 3.0], by="source") == {"edge": [0, 0], "server": [0, 12.5]}


def test_per_second_and_counter_deltas():
    assert metrics.per_second([0.0, 0.5, 1.5, 1.6], [1.0, 2.0], t0=0.0) == [2.0, 2.0]
    assert metrics.per_second([1.5], [1.0, 2.0], 0.0, weights=[10.0]) == [0.0, 10.0]
    samples = [{"t": 0.5, "b": 100}, {"t": 1.5, "b": 180}, {"t": 2.5, "b": 180}]
    assert metrics.last_sample(samples, [1.0, 2.0, 3.0], "b") == [100, 180, 180]
    assert metrics.deltas(samples, [1.0, 2.0, 3.0], "b") == [100, 80, 0]


def test_compute_shapes_the_payload():
    lists, events = session()
    log = {"started_at": 0.0, "lists": lists, "events": events, "samples": [],
           "flushes": [{"t": 3.0, "sent": 3, "acknowledged": 3}, {"t": 4.0, "sent": 0, "acknowledged": 0}],
           "syncs": [{"t": 0.5, "bytes": 1000, "changed": True, "version": 1, "ms": 12.0, "error": None}]}
    got = metrics.compute(log, now=6.0, buckets=3)
    assert got["edges"] == [2.0, 4.0, 6.0]
    assert got["totals"] == {"impressions": 0, "clicks": 2, "purchases": 1, "revenue": 12.5, "events": 4,
                             "lists": 3, "uploaded": 3}
    assert got["events_per_s"]["acknowledged by server"] == [0.0, 1.5, 0.0]
    assert [p["source"] for p in got["latency"]] == ["server", "edge", "edge"]
