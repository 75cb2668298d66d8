"""One contract for every store: each test runs against SQLite, a real redis-server and a real Redis Cluster."""

import threading
import time
from dataclasses import replace

import numpy as np
import pytest

from pocketrank.server.stores.base import Updates, UserRecord
from pocketrank.shared.features import UserState
from tests.factories import event as ev, product
from tests.server.conftest import DIM, synthetic_catalogue


@pytest.fixture(params=["sqlite", "redis", "redis-cluster"])
def backend(request) -> str:
    """The contract holds on a Redis Cluster too (three masters: tests/server/conftest.py's redis_cluster_url)."""
    return request.param


def test_append_answers_new_or_duplicate_per_event(store):
    assert store.append_events([ev(n=1), ev(n=2), ev(n=1)]) == [True, True, False]
    assert store.append_events([ev(n=2), ev(n=3)]) == [False, True]
    assert store.count_events() == 3
    assert store.count_events(["e1", "e3", "nope"]) == 2


def test_a_logged_id_with_other_content_is_a_conflict_and_the_same_event_is_not(store):
    first = ev(n=1, item=4, context=(("platform", "ios"),))
    assert store.append_events([first]) == [True]
    others = [replace(first, item_id=5), replace(first, timestamp=first.timestamp + 1e-6), replace(first, context=()),
              replace(first, user_id="u9"), replace(first, type="purchase"), replace(first, session_id="s2")]
    assert store.append_events([first, *others]) == [False] * 7
    assert store.conflicting([first, *others]) == [False] + [True] * 6
    assert store.conflicting([ev(n=99)]) == [False]  # never logged: nothing to conflict with
    assert [e.event for e in store.iter_log()] == [first]


def test_the_log_keeps_order_and_gives_increasing_positions(store):
    store.append_events([ev(n=i, user=f"u{i % 3}", context=(("platform", "ios"),) if i == 4 else ())
                         for i in range(10)])
    entries = list(store.iter_log())
    assert [e.event.event_id for e in entries] == [f"e{i}" for i in range(10)]
    assert all(a.pos < b.pos for a, b in zip(entries, entries[1:]))
    assert entries[4].event == ev(n=4, user="u1", context=(("platform", "ios"),))  # the context travels too
    assert [e.event.event_id for e in store.iter_log(after=entries[6].pos)] == ["e7", "e8", "e9"]


def test_claimed_events_come_back_until_committed(store):
    store.append_events([ev(n=i) for i in range(5)])
    assert store.pending_count() == 5
    with store.updater_lock():
        first = store.claim_events(3)
    with store.updater_lock():  # not committed: a crash here must not lose them
        again = store.claim_events(3)
    assert [e.event.event_id for e in again] == [e.event.event_id for e in first] == ["e0", "e1", "e2"]
    with store.updater_lock():
        store.commit_updates(Updates(), again)
    with store.updater_lock():
        rest = store.claim_events(10)
    assert [e.event.event_id for e in rest] == ["e3", "e4"]
    assert store.pending_count() == 2


def test_a_failed_step_changes_nothing(store):
    store.append_events([ev(n=1)])
    with pytest.raises(RuntimeError):
        with store.updater_lock():
            entries = store.claim_events(10)
            raise RuntimeError("crash before commit")
    with store.updater_lock():
        assert [e.event.event_id for e in store.claim_events(10)] == ["e1"]
    assert entries


def test_commit_writes_records_counters_and_position_together(store):
    store.append_events([ev(n=1, item=7), ev(n=2, etype="impression", item=8)])
    with store.updater_lock():
        entries = store.claim_events(10)
        rec = UserRecord(UserState(np.ones(DIM, np.float32), 2.0, 2), entries[-1].pos, updated_at=5.0)
        store.commit_updates(Updates({"u1": rec}, {"u1": {7}}, {7: 1}, {8: 1}), entries)
    got = store.user_records(["u1", "nobody"], DIM)
    assert got["u1"].state.w == 2.0 and got["u1"].state.n_events == 2 and got["u1"].last_pos == entries[-1].pos
    assert np.array_equal(got["u1"].state.s, np.ones(DIM, np.float32))
    assert got["nobody"].state.w == 0 and got["nobody"].last_pos == 0
    assert store.has_user("u1") and not store.has_user("nobody")
    assert store.user_ids() == ["u1"]
    assert store.consumed_items("u1") == {7}
    assert store.item_counts() == {7: 1} and store.exposures() == {8: 1}
    assert store.pending_count() == 0


def test_user_context_reads_record_consumed_and_features_at_once(store):
    store.put_features({"u1": {"7d": {"categories": {"Books": 2.0}}}})
    store.append_events([ev(n=1, item=3, etype="purchase")])
    with store.updater_lock():
        store.commit_updates(Updates(consumed={"u1": {3}}), store.claim_events(10))
    ctx = store.user_context("u1", DIM)
    assert ctx.consumed == {3}
    assert ctx.features == {"7d": {"categories": {"Books": 2.0}}}
    assert store.user_context("nobody", DIM).features is None


def test_recent_sequence_round_trips(store):
    from pocketrank.server.stores.base import push_recent

    rec = UserRecord.empty(DIM)
    for n in range(60):
        rec.recent = push_recent(rec.recent, ev(n=n, item=n + 1), keep=50)
    rec.recent = push_recent(rec.recent, ev(n=99, etype="search", query="red shoes"), keep=50)
    store.put_user_records({"u1": rec})
    recent = store.user_records(["u1"], DIM)["u1"].recent_events()
    assert len(recent) == 50
    assert recent[0] == {"type": "click", "item_id": 12, "timestamp": 1_700_000_011.0}
    assert recent[-1] == {"type": "search", "item_id": None, "timestamp": 1_700_000_099.0}


def test_items_vectors_and_provisional_flags(store):
    items, vectors = synthetic_catalogue(20)
    v0 = store.catalogue_version()
    store.put_items(items[:10], {i: vectors[i] for i in range(1, 11)})
    store.put_items(items[10:], {i: vectors[i] for i in range(11, 21)}, provisional=[11, 12])
    assert store.catalogue_version() == v0 + 2
    ids, vecs = store.item_vectors()
    assert ids.tolist() == list(range(1, 21)) and np.array_equal(vecs[4], vectors[5])
    assert store.provisional_items() == {11, 12}
    # A metadata change keeps the vector; a trained vector clears the provisional flag.
    changed = product(11, "Garden", "new title", 3.0, in_stock=False)
    store.put_items([changed])
    assert store.provisional_items() == {11, 12}
    # An item written by index alone (no product id) is stored with its index's digits as its id.
    assert store.get_items([11, 999]) == {11: replace(changed, sku="11")}
    assert store.item_index(["11", "999"]) == {"11": 11}
    store.put_items([changed], {11: vectors[1]})
    assert store.provisional_items() == {12}
    assert np.array_equal(store.item_vectors()[1][10], vectors[1])
    assert [it.item_id for it in store.items()] == list(range(1, 21))


def test_meta_features_exposures_and_bundle_records(store):
    store.set_meta("current_model", "m1")
    assert store.get_meta("current_model") == "m1" and store.get_meta("nope", "x") == "x"
    store.put_features({"a": {"1d": {"counts": {"click": 1}}}, "b": {}})
    store.put_features({"a": {"1d": {"counts": {"click": 2}}}})  # replaces the whole table
    assert store.features("a") == {"1d": {"counts": {"click": 2}}} and store.features("b") is None
    store.set_exposures({1: 5, 2: 7})
    store.set_exposures({2: 1})
    assert store.exposures() == {2: 1}
    from pocketrank.server.stores.base import RecordRow  # the record change log (more in test_record_log.py)

    row = RecordRow(3, b"\x00\x01", b"s" * 32, b"g" * 64)
    store.put_records(3, {"a": row}, {"a": b"g" * 64})
    assert store.records_at(3, ["a", "c"]) == {"a": row} and store.records_at(2, ["a"]) == {}


def test_rebuild_states_equals_folding_event_by_event(store):
    from pocketrank.server.online.catalogue import load_catalogue
    from pocketrank.server.online.fold import rebuild_states
    from pocketrank.server.online.updater import Updater

    items, vectors = synthetic_catalogue(30)
    store.put_items(items, vectors)
    events = [ev(n=i, user=f"u{i % 4}", item=1 + i % 30, etype=("view", "click", "purchase")[i % 3]) for i in range(40)]
    events.append(ev(n=50, user="u1", etype="search", query="garden thing"))
    store.append_events(events)
    Updater(store, lambda: load_catalogue(store)).drain()
    folded = store.user_records([f"u{i}" for i in range(4)], DIM)
    titles = {it.item_id: it.title for it in items}
    assert rebuild_states(store, vectors, titles, DIM) == 4
    rebuilt = store.user_records([f"u{i}" for i in range(4)], DIM)
    for u in folded:
        assert rebuilt[u].state.n_events == folded[u].state.n_events
        np.testing.assert_allclose(rebuilt[u].state.s, folded[u].state.s, rtol=1e-6)
        assert rebuilt[u].last_pos == folded[u].last_pos
    assert store.pending_count() == 0
    assert sum(store.item_counts().values()) == sum(e.type in ("click", "purchase") for e in events)


def test_wait_for_events_wakes_when_something_is_appended(store):
    t0 = time.monotonic()
    assert store.wait_for_events(0.05) is False
    assert time.monotonic() - t0 >= 0.04
    timer = threading.Timer(0.05, lambda: store.append_events([ev(n=1)]))
    timer.start()
    t0 = time.monotonic()
    assert store.wait_for_events(5.0) is True
    assert time.monotonic() - t0 < 2.0
    timer.join()


def test_only_one_updater_holds_the_lock(store):
    inside, order = threading.Event(), []

    def hold():
        with store.updater_lock():
            inside.set()
            time.sleep(0.2)
            order.append("first")

    t = threading.Thread(target=hold)
    t.start()
    inside.wait(5)
    with store.updater_lock():
        order.append("second")
    t.join()
    assert order == ["first", "second"]
