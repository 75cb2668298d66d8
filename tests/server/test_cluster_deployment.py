"""Online state across machines, for real: two gunicorn servers and two `pocketrank updater` processes
share a 3-master Redis Cluster; each event folds exactly once and every user's vector is fresh."""

import re
import sys
import time
import uuid

import httpx
import pytest

from pocketrank.server.config import Config
from tests.factories import free_port
from tests.server.conftest import DIM, seed_store
from tests.server.test_deployment import GUNICORN, Proc, env_for, wait_healthy

pytestmark = pytest.mark.slow  # four processes on a cluster: ~30 s


def test_two_servers_and_two_updaters_share_a_redis_cluster(redis_cluster_url, tmp_path):
    from pocketrank.server.stores import open_store

    config = Config(home=tmp_path / "home", store="redis", redis_url=redis_cluster_url,
                    redis_prefix=f"test-{uuid.uuid4().hex[:8]}:", redis_cluster=True)
    store = open_store(config)
    seed_store(store, config.home)
    env = env_for(config, POCKETRANK_REDIS_CLUSTER="1", POCKETRANK_WORKERS="1", POCKETRANK_UPDATER="external",
                  POCKETRANK_ADDRESS_RATE="0")
    ports = [free_port(), free_port()]
    procs = [Proc(GUNICORN, {**env, "POCKETRANK_BIND": f"127.0.0.1:{p}"}, tmp_path / f"api-{p}.log") for p in ports]
    updaters = []
    try:
        for p, proc in zip(ports, procs):
            wait_healthy(f"http://127.0.0.1:{p}", proc)
        updaters = [Proc([sys.executable, "-m", "pocketrank", "updater", "--idle-wait", "0.1"], env,
                         tmp_path / f"updater-{i}.log") for i in range(2)]
        deadline = time.monotonic() + 60
        while not all("events pending" in u.log.read_text() for u in updaters):
            assert time.monotonic() < deadline and all(u.proc.poll() is None for u in updaters), \
                [u.log.read_text()[-2000:] for u in updaters]
            time.sleep(0.1)
        time.sleep(2.5)  # past the first session (2 s), both updaters hold a share of the partitions
        apis = [httpx.Client(base_url=f"http://127.0.0.1:{p}", timeout=10) for p in ports]
        users = [f"c-user-{i}" for i in range(60)]
        sent = {u: 0 for u in users}
        for b in range(30):  # 30 batches of 10 events, alternating between the servers
            evs = [{"event_id": f"c{b}-{j}", "user_id": users[(b * 10 + j) % 60], "device_id": "d", "type": "click",
                    "item_id": 1 + (b * 10 + j) % 300, "timestamp": time.time() - 1} for j in range(10)]
            assert apis[b % 2].post("/v1/events", json={"events": evs}).json()["accepted"] == 10
            for e in evs:
                sent[e["user_id"]] += 1
        # A retry through the other server is a duplicate: the ids are the cluster's, not a server's.
        again = [{"event_id": "c0-0", "user_id": users[0], "device_id": "d", "type": "click", "item_id": 1,
                  "timestamp": time.time() - 1}]
        assert apis[1].post("/v1/events", json={"events": again}).json()["accepted"] == 0
        deadline = time.monotonic() + 30
        while any(apis[i % 2].get(f"/v1/users/{u}").json().get("n_events") != n
                  for i, (u, n) in enumerate(sent.items())):
            assert time.monotonic() < deadline, [u.log.read_text()[-2000:] for u in updaters]
            time.sleep(0.1)
        assert store.pending_count() == 0
        # Fresh: one more event for a user shows on the other server within a second.
        t0 = time.monotonic()
        apis[0].post("/v1/events", json={"events": [{**again[0], "event_id": "fresh-1"}]})
        while apis[1].get(f"/v1/users/{users[0]}").json()["n_events"] != sent[users[0]] + 1:
            assert time.monotonic() - t0 < 1.0
            time.sleep(0.01)
        records = store.user_records(users, DIM)
        assert {u: r.state.n_events for u, r in records.items()} == {**sent, users[0]: sent[users[0]] + 1}
    finally:
        for u in updaters:
            assert u.stop() == 0, u.log.read_text()[-3000:]
        for proc in procs:
            assert proc.stop() == 0, proc.log.read_text()[-3000:]
    folded = [int(re.search(r"stopped after folding (\d+) events", u.log.read_text()).group(1)) for u in updaters]
    assert sum(folded) == 301 and min(folded) > 0, folded  # exactly once in all, and both did a share
    store.close()
