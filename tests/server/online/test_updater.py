"""The real-time updater on both stores: order per user, the shared fold, crash and restart."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from pocketrank.server.online.catalogue import load_catalogue
from pocketrank.server.online.updater import Updater
from pocketrank.shared.features import fold_events, query_vector, user_vector
from pocketrank.shared.schemas import Event
from tests.server.conftest import DIM, seed_store

TYPES = ("view", "click", "add_to_cart", "purchase", "impression")


def events_for(n, n_users=7, start=0):
    rng = np.random.default_rng(start)
    out = []
    for i in range(start, start + n):
        etype = TYPES[int(rng.integers(len(TYPES)))]
        out.append(Event(f"e{i}", f"u{i % n_users}", "d", etype, 1_700_000_000.0 + i, int(rng.integers(1, 301)),
                         None, "s"))
    return out


def expected_states(events, vectors, titles):
    per_user = {}
    for e in events:
        vec = vectors.get(e.item_id) if e.item_id else query_vector(e.query, titles, vectors)
        per_user.setdefault(e.user_id, []).append((e.type, vec))
    return {u: fold_events(seq, DIM) for u, seq in per_user.items()}


def assert_states_match(store, expected):
    got = store.user_records(list(expected), DIM)
    for u, st in expected.items():
        assert got[u].state.n_events == st.n_events, u
        np.testing.assert_allclose(user_vector(got[u].state), user_vector(st), atol=1e-5)


def test_the_updater_folds_each_users_events_in_log_order_like_the_device(store, tmp_path):
    items, vectors = seed_store(store, tmp_path)
    titles = {it.item_id: it.title for it in items}
    events = events_for(500)
    events.insert(17, Event("q1", "u3", "d", "search", 1_700_000_000.5, None, "garden thing", "s"))
    for i in range(0, len(events), 60):  # batches arrive while the updater works
        store.append_events(events[i:i + 60])
    updater = Updater(store, lambda: load_catalogue(store), batch=64)
    assert updater.drain() == len(events)
    assert_states_match(store, expected_states(events, vectors, titles))
    rec = store.user_records(["u3"], DIM)["u3"]
    last = [e for e in events if e.user_id == "u3"][-1]
    assert len(rec.recent) == 50 and rec.recent_events()[-1]["item_id"] == last.item_id
    assert updater.drain() == 0 and store.pending_count() == 0


def test_a_crash_before_commit_folds_nothing_and_the_restart_folds_once(store, tmp_path):
    items, vectors = seed_store(store, tmp_path)
    events = events_for(40)
    store.append_events(events)

    def broken_catalogue():
        raise OSError("disk gone mid-step")

    with pytest.raises(OSError):
        Updater(store, broken_catalogue).step()
    assert store.pending_count() == 40 and store.user_ids() == []
    Updater(store, lambda: load_catalogue(store)).drain()
    assert_states_match(store, expected_states(events, vectors, {}))


def test_events_delivered_again_are_not_applied_twice(store, tmp_path):
    """A record remembers the last position folded into it; a replay below it is skipped."""
    from pocketrank.server.stores.base import Updates

    seed_store(store, tmp_path)
    events = events_for(30)
    store.append_events(events)
    updater = Updater(store, lambda: load_catalogue(store))
    with store.updater_lock():
        entries = store.claim_events(100)
    updater.drain()
    before = store.user_records(["u0", "u1"], DIM)
    # Replay the same entries through the fold, as a redelivery after a lost acknowledgement would.
    from pocketrank.server.online.fold import fold_entries

    cat = load_catalogue(store)
    records = store.user_records({e.event.user_id for e in entries}, DIM)
    updates = Updates()
    fold_entries(entries, records, updates, cat.vector_map(), cat.title_index(), DIM, 50)
    assert updates.records == {} and updates.popularity == {}
    after = store.user_records(["u0", "u1"], DIM)
    assert all(after[u].state.n_events == before[u].state.n_events for u in after)


def _updater_process(config, env_extra=None):
    env = {**os.environ, "POCKETRANK_HOME": str(config.home), "POCKETRANK_STORE": config.store,
           "POCKETRANK_REDIS_URL": config.redis_url, "POCKETRANK_REDIS_PREFIX": config.redis_prefix,
           "POCKETRANK_UPDATER_BATCH": "100", **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-m", "pocketrank", "updater", "--idle-wait", "0.2"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait(pred, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.01)
    return False


@pytest.mark.slow
def test_the_updater_process_killed_mid_backlog_resumes_without_skipping_or_double_applying(store, store_config):
    items, vectors = seed_store(store, store_config.home)
    events = events_for(6000, n_users=50)
    store.append_events(events)
    proc = _updater_process(store_config)
    try:
        assert _wait(lambda: store.pending_count() < 5000), "the updater made no progress"
        proc.send_signal(signal.SIGKILL)  # no clean shutdown: whatever was mid-step is lost
        proc.wait(10)
        assert store.pending_count() > 0, "killed too late to test a resume; make the backlog larger"
        more = events_for(500, n_users=50, start=6000)
        store.append_events(more)
        proc = _updater_process(store_config)
        assert _wait(lambda: store.pending_count() == 0), "the restarted updater did not catch up"
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert proc.returncode in (0, -signal.SIGTERM), err.decode()[-2000:]
    assert_states_match(store, expected_states(events + more, vectors, {}))


def test_ingest_folds_what_was_pending_before_its_own_events_in_log_order(store, tmp_path):
    """The embedded path: events another process appended (not yet folded) go first, then the request's own."""
    items, vectors = seed_store(store, tmp_path)
    events = events_for(120, n_users=5)
    store.append_events(events[:50])  # e.g. appended by a worker in external mode
    updater = Updater(store, lambda: load_catalogue(store), batch=64)
    assert updater.ingest(events[50:90]) == [True] * 40
    assert updater.ingest([*events[90:], events[95], events[10]]) == [True] * 30 + [False, False]
    assert store.pending_count() == 0
    assert_states_match(store, expected_states(events, vectors, {}))
    rec = store.user_records(["u3"], DIM)["u3"]
    assert [r["timestamp"] for r in rec.recent_events()] == [e.timestamp for e in events if e.user_id == "u3"]


def test_the_recent_sequence_keeps_the_newest_events_across_batches():
    from pocketrank.server.stores.base import RECENT_DTYPE, append_recent, push_recent
    from pocketrank.shared.schemas import EVENT_TYPES

    rows = [(1_700_000_000.0 + i, i + 1, i % len(EVENT_TYPES)) for i in range(70)]
    one_by_one = np.zeros(0, RECENT_DTYPE)
    for ts, item, code in rows:
        one_by_one = push_recent(one_by_one, Event(f"e{item}", "u", "d", EVENT_TYPES[code], ts, item, None, "s"), 50)
    batched = np.zeros(0, RECENT_DTYPE)
    for lo, hi in ((0, 3), (3, 40), (40, 41), (41, 70)):  # batches of the updater, the last one overflowing
        batched = append_recent(batched, rows[lo:hi], 50)
    assert batched.tobytes() == one_by_one.tobytes() and len(batched) == 50
    assert append_recent(batched, rows[:2], 0).size == 0


def test_concurrent_ingest_calls_share_commits_and_each_gets_its_own_answer(store, tmp_path):
    import threading

    items, vectors = seed_store(store, tmp_path)
    events = events_for(400, n_users=9)
    shared = Event("shared", "u0", "d", "click", 1_700_001_000.0, 5, None, "s")  # sent by every request
    updater = Updater(store, lambda: load_catalogue(store), batch=120)
    answers, start = {}, threading.Barrier(8)

    def client(k):
        start.wait()
        for j in range(5):
            answers[(k, j)] = updater.ingest(events[k * 50 + j * 10:k * 50 + j * 10 + 10] + [shared])

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.count_events() == 401 and store.pending_count() == 0
    assert all(len(a) == 11 and all(a[:10]) for a in answers.values())  # each request's own events: new
    assert sum(a[10] for a in answers.values()) == 1  # the shared one was new for exactly one request
    # Folded in log order, whichever thread committed which group.
    position = {e.event.event_id: e.pos for e in store.iter_log()}
    logged = sorted([*events, shared], key=lambda e: position[e.event_id])
    assert_states_match(store, expected_states(logged, vectors, {}))
