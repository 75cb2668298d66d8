"""bench/_shipped_device.py's pieces: the offline split, and that the answers it measures are the SDK's own."""

from __future__ import annotations

import httpx
import pyarrow as pa
import pytest

from bench import _shipped_device as dev
from bench._shipped import split_tables
from pocketrank.edge_runtime import EdgeClient
from pocketrank.edge_runtime.transport import Transport

USERS = 8


def _log(rows: list[tuple[str, str, float]]) -> pa.Table:
    return pa.table({"user_id": [r[0] for r in rows], "item_id": [r[1] for r in rows],
                     "timestamp": [r[2] for r in rows], "type": ["click"] * len(rows)})


def test_offline_split_holds_back_exactly_each_eligible_users_last_k_events():
    # Interleaved users: "a" has 9 events, "b" 7 (k + min_left exactly), "c" 6 (one short: keeps them all).
    rows = []
    for t in range(9):
        rows.append(("a", f"a{t}", float(t)))
        if t < 7:
            rows.append(("b", f"b{t}", float(t)))
        if t < 6:
            rows.append(("c", f"c{t}", float(t)))
    kept, held = dev.offline_split(_log(rows), 3, min_left=4)
    assert sorted(held) == ["a", "b"]
    assert [i for _, i, _ in held["a"]] == ["a6", "a7", "a8"]
    assert [i for _, i, _ in held["b"]] == ["b4", "b5", "b6"]
    assert all(t == "click" for rows_ in held.values() for t, _, _ in rows_)
    left = list(zip(kept.column("user_id").to_pylist(), kept.column("item_id").to_pylist()))
    assert [i for u, i in left if u == "a"] == [f"a{t}" for t in range(6)]
    assert [i for u, i in left if u == "c"] == [f"c{t}" for t in range(6)]
    assert len(kept) + sum(map(len, held.values())) == len(rows)
    # The kept rows are the log's rows in the log's order.
    assert left == [(u, i) for u, i, _ in rows if (u, i) not in {(u2, i2) for u2 in held for _, i2, _ in held[u2]}]
    kept0, held0 = dev.offline_split(_log(rows), 0)
    assert held0 == {} and len(kept0) == len(rows)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """MovieLens-100k's first few users (held-back split as `stale` makes it), one epoch, published."""
    tables, train_events, test_events = split_tables("100k", 0, "random", None)
    users = sorted(set(train_events.column("user_id").to_pylist()))[:USERS]
    keep = set(users)
    train_events = train_events.filter(pa.array([u in keep for u in train_events.column("user_id").to_pylist()]))
    kept, held = dev.offline_split(train_events, 5)
    home, _ = dev.build_home(tmp_path_factory.mktemp("tiny") / "home", tables, kept, seed=0, epochs=1)
    store = home.store()
    index = {it.external_id: it.item_id for it in store.items()}
    store.close()
    app = dev.server_app(home.root)
    key = (home.root / "keys" / "signing.pub").read_text().strip()
    return app, key, held, index, home.root


def _phone(app, key, path) -> EdgeClient:
    transport = Transport(client=httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://test"))
    return EdgeClient(path, key, transport=transport, device_id="test-phone")


@pytest.mark.slow  # the tiny home's import, training, export and publish: ~15 s idle, longer on a busy machine
def test_the_measured_answer_is_the_sdks_offline_answer(tiny, tmp_path):
    app, key, held, index, _root = tiny
    user = sorted(held)[0]
    offline = held[user]
    got = dev.device_answer(app, key, tmp_path / "bench.sqlite", user, offline)
    # The same phone driven by hand, as an app would.
    client = _phone(app, key, tmp_path / "own.sqlite")
    try:
        client.sync([user])
        cands = client.cache.packed(user)
        assert cands is not None
        published = cands.ids.tolist()
        for etype, item, ts in offline:
            client.track(user, etype, item, timestamp=ts)
        rec = client.recommend(user, dev.K, allow_server=False)
    finally:
        client.close()
    assert rec.source == got.source == "edge"
    assert got.reranked == [index[i] for i in rec.item_ids]
    assert got.candidates == published and len(published) > dev.K
    # Without a model: the published order, less what the user clicked offline (the SDK's rules).
    clicked = {index[i] for _, i, _ in offline}
    assert got.cached == [i for i in published if i not in clicked][: dev.K]
    assert not clicked & set(got.reranked)
    # Every candidate's entry is held, so an offline event on one has a vector; others may or may not.
    assert sum(1 for _, i, _ in offline if index[i] in set(published)) <= got.offline_known <= len(offline)


@pytest.mark.slow
def test_offline_events_reach_the_server_through_its_updater_in_order(tiny):
    app, _key, held, index, _root = tiny
    held = {u: rows for u, rows in held.items() if u != sorted(held)[0]}  # not the other test's phone's user
    assert dev.ingest(app, held, 0, 2, index) == 2 * len(held)
    store = app.extensions["pocketrank"].store
    for u, rows in held.items():
        recent = store.user_context(u, app.extensions["pocketrank"].catalogue.dim).record.recent
        assert [int(i) for i in recent["item"][-2:]] == [index[i] for _, i, _ in rows[:2]]
        assert index[rows[0][1]] in store.consumed_items(u)


def test_knob_diversity_counts_categories_and_pairs_of_the_top_10():
    from bench._shipped_knob import diversity

    got = diversity({"a": [1, 2, 3], "b": [4, 5]}, {1: "x", 2: "x", 3: "y", 4: "z", 5: "w"})
    assert got["categories@10"] == 2.0
    assert got["ILD@10"] == pytest.approx((2 / 3 + 1.0) / 2)


def test_the_knob_settings_share_one_off_point_then_each_knobs_values():
    from bench._shipped_knob import settings

    got = settings({"max_per_category": (None, 3, 1), "popular_penalty": (0.0, 2.0)})
    assert got == [("off", None), ("max_per_category", 3), ("max_per_category", 1), ("popular_penalty", 2.0)]


@pytest.mark.slow
def test_the_knobs_answers_keep_the_cap_and_the_tilt_on_the_server_and_the_device(tiny, tmp_path):
    from bench import _shipped_knob as knob
    from bench._shipped import served
    from pocketrank.server.home import Home

    app, _key, held, _index, root = tiny
    users = sorted(held)[:3]
    store = app.extensions["pocketrank"].store
    category = {it.item_id: it.category for it in store.items()}
    off, cap, tilt = ("off", None), ("max_per_category", 1), ("popular_penalty", 5000.0)
    phones, sources = knob.device_lists(root, users, [off, cap, tilt])
    assert set(sources) <= {"edge", "popular"} and sources.get("edge", 0) > 0
    home = Home(root)
    for lists in (phones[cap], served(home, store, users, 1).lists):
        for u in users:
            cats = [category[i] for i in lists[u]]
            assert len(lists[u]) == knob.K and len(set(cats)) == len(cats)
    uncapped = served(home, store, users).lists
    assert any(len({category[i] for i in uncapped[u]}) < knob.K for u in users)  # the cap changed something
    assert phones[off] != phones[cap]
    # The popularity knob: at this strength no product of the popular list stays in a list, on either side
    # (each side's list: the server's from the store's counts now, the phone's from the signed manifest, which
    # other tests' events may have moved apart); without it some do.
    from pocketrank.server.online.ranker import popular as popular_list

    client = _phone(app, _key, tmp_path / "phone.sqlite")
    try:
        client.sync(users[:1])
        signed = set(client.cache.popular())
    finally:
        client.close()
    assert signed and not any(set(phones[tilt][u]) & signed for u in users)
    live = set(popular_list(store.item_counts(), {}))
    assert any(set(phones[off][u]) & live for u in users)
    assert not any(set(served(home, store, users, popular_penalty=5000.0).lists[u]) & live for u in users)
