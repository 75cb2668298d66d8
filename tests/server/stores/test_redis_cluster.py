"""What the Redis Cluster store adds to the contract (test_store_contract.py runs that on the cluster too):
slot placement, partitions shared between updaters, and its settings. A real 3-master cluster."""

import threading
import time

import pytest

from pocketrank.server.config import Config
from pocketrank.server.stores.base import Updates
from pocketrank.shared.errors import PocketrankError, ValidationError
from tests.factories import event as ev


@pytest.fixture
def backend() -> str:
    return "redis-cluster"


def test_a_users_record_consumed_items_and_log_entries_share_one_slot(store):
    from pocketrank.server.stores.redis_cluster import partition_of, user_slots

    users = [f"user-{i}" for i in range(40)]
    store.append_events([ev(n=i, user=u, item=1 + i) for i, u in enumerate(users)])
    with store.updater_lock():
        entries = store.claim_events(1000)
        while entries:
            store.commit_updates(Updates(consumed={e.event.user_id: {1} for e in entries}), entries)
            entries = store.claim_events(1000)
    slots = user_slots(store, users)
    assert all(len(s) == 1 for s in slots.values())
    for e in store.iter_log():  # each entry sits in its user's partition, and the server agrees on the slot
        assert partition_of(e.pos) == store.part(e.event.user_id)
        key = store.uk("c", e.event.user_id)
        assert store.r.exists(key) and store.r.cluster_keyslot(key) == store.r.cluster_keyslot(store.streams[
            partition_of(e.pos)])
    # 40 users over 16 partitions over 3 masters: the users are spread, not piled on one node.
    nodes = {store.r.get_node_from_key(store.uk("u", u)).name for u in users}
    assert len({store.part(u) for u in users}) > 8 and len(nodes) == 3


def test_consumer_sessions_split_the_partitions_and_an_exclusive_session_gets_them_all(store_config):
    from pocketrank.server.stores import open_store

    a, b = open_store(store_config), open_store(store_config)
    with a.consumer_session():  # a is seen alive: from now on two updaters share
        pass
    held = {}
    inside, leave = threading.Barrier(2), threading.Event()

    def consume(name, s):
        with s.consumer_session(timeout=10):
            held[name] = set(s._session.held)
            inside.wait(10)
            leave.wait(10)

    ts = [threading.Thread(target=consume, args=(n, s)) for n, s in (("b", b), ("a", a))]
    ts[0].start()
    time.sleep(0.2)
    ts[1].start()
    time.sleep(0.5)
    got_all = []

    def exclusive():
        with b.updater_session(timeout=10):
            got_all.append(set(b._session.held))

    t = threading.Thread(target=exclusive)
    t.start()
    time.sleep(0.3)
    assert not got_all, "an exclusive session ran while consumers held partitions"
    leave.set()
    for th in (*ts, t):
        th.join(15)
    assert held["a"] and held["b"] and not held["a"] & held["b"]
    assert held["a"] | held["b"] == set(range(a.partitions))
    assert got_all == [set(range(a.partitions))]
    # While an exclusive session waits, consumers stand back; once it is done they take partitions again.
    with a.consumer_session(timeout=5):
        assert a._session.held
    a.close()
    b.close()


def test_each_event_folds_once_when_two_stores_fold_side_by_side(store_config):
    from pocketrank.server.online.catalogue import load_catalogue
    from pocketrank.server.online.updater import Updater
    from pocketrank.server.stores import open_store
    from tests.server.conftest import DIM, synthetic_catalogue

    a, b = open_store(store_config), open_store(store_config)
    items, vectors = synthetic_catalogue(30)
    a.put_items(items, vectors)
    users = [f"v{i}" for i in range(50)]
    a.append_events([ev(n=i, user=users[i % 50], item=1 + i % 30) for i in range(500)])
    stop = threading.Event()
    ups = [Updater(s, lambda s=s: load_catalogue(s), batch=37) for s in (a, b)]
    ts = [threading.Thread(target=u.run, args=(stop, 0.05)) for u in ups]
    for t in ts:
        t.start()
    b.append_events([ev(n=1000 + i, user=users[i % 50], item=1 + i % 30) for i in range(500)])
    deadline = time.monotonic() + 30
    while a.pending_count() and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    for t in ts:
        t.join(15)
    assert a.pending_count() == 0
    assert ups[0].applied + ups[1].applied == 1000
    assert {u: r.state.n_events for u, r in a.user_records(users, DIM).items()} == {u: 20 for u in users}
    assert sum(a.item_counts().values()) == 1000  # clicks: each counted once, whichever partition it came from
    a.close()
    b.close()


def test_a_store_made_with_other_partitions_is_refused(store_config):
    from pocketrank.server.stores import open_store

    open_store(store_config).close()
    with pytest.raises(PocketrankError, match="made with 16 log partitions; set POCKETRANK_REDIS_PARTITIONS=16"):
        open_store(Config(**{**store_config.__dict__, "redis_partitions": 4}))


def test_cluster_settings_are_checked(monkeypatch, redis_cluster_url):
    from pocketrank.server.api.ratelimit import storage_uri
    from pocketrank.server.stores.redis_cluster import RedisClusterStore

    monkeypatch.setenv("POCKETRANK_REDIS_CLUSTER", "1")
    with pytest.raises(ValidationError, match="POCKETRANK_REDIS_CLUSTER: needs POCKETRANK_STORE=redis"):
        Config.from_env()
    monkeypatch.setenv("POCKETRANK_STORE", "redis")
    monkeypatch.setenv("POCKETRANK_REDIS_PARTITIONS", "0")
    with pytest.raises(ValidationError, match="POCKETRANK_REDIS_PARTITIONS"):
        Config.from_env()
    monkeypatch.setenv("POCKETRANK_REDIS_PARTITIONS", "8")
    monkeypatch.setenv("POCKETRANK_REDIS_URL", redis_cluster_url)
    config = Config.from_env()
    assert config.redis_cluster and config.redis_partitions == 8
    assert storage_uri(config) == "redis+cluster://" + redis_cluster_url.removeprefix("redis://")
    with pytest.raises(ValidationError, match="must not contain"):
        RedisClusterStore(redis_cluster_url, "a{b}:")
    with pytest.raises(PocketrankError, match="cannot reach a Redis Cluster"):
        RedisClusterStore("redis://127.0.0.1:1", "x:")
