"""bench scale's `cluster` section: ingestion on a 3-master Redis Cluster beside one Redis, in one run.

On each store the same processes: two API servers (gunicorn, the production config, one worker
each, POCKETRANK_UPDATER=external) and two `pocketrank updater` processes, on loopback. Measured:

- event -> embedding at 1,000 events/s offered (100 POSTs/s of 10 events, alternating between the
  two servers, each event for a user with no record yet): from the POST's answer until the
  store's record has folded it (bench/_loadgen.FreshnessProbe), p50 and p99;
- ingestion: 4 clients posting 500-event batches back to back to both servers for a few seconds
  (events/s appended), then how long the two updaters take to fold the backlog (events/s folded).

Catalogue: 50,000 products with seeded random unit vectors (the ranker is a fresh fp32 ONNX click
model, bench/server.py's). Both Redis setups run appendonly yes, appendfsync always. Everything,
the load generator included, shares this machine's cores: the cluster's three servers compete
with the API and updater processes for them, so this shows the cost of the partitioned layout,
not a cluster's scale-out (which needs machines).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench._loadgen import Client, FreshnessProbe, closed_loop, open_loop, pct, stop_processes, wait_ready, warm_event

REPO = Path(__file__).resolve().parents[1]
N_ITEMS, DIM, MODEL = 50_000, 64, "bench-random-init"


def log(msg: str) -> None:
    print(msg, flush=True)


def seed(store, home: Path, ranker: Path) -> None:
    from pocketrank.shared.schemas import Item

    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(N_ITEMS, DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    cats = ("Books", "Garden", "Music", "Toys")
    items = [Item(i, f"product {i}", cats[i % 4], 2000, float(5 + i % 50), True, (cats[i % 4],))
             for i in range(1, N_ITEMS + 1)]
    store.put_items(items, {i + 1: vecs[i] for i in range(N_ITEMS)})
    store.set_meta("current_model", MODEL)
    (home / "models" / MODEL).mkdir(parents=True, exist_ok=True)
    shutil.copy(ranker, home / "models" / MODEL / "ranker.fp32.onnx")


class Deployment:
    """Two API servers and two updater processes on one store."""

    def __init__(self, env: dict, logdir: Path):
        from pocketrank.demo_app.localserver import free_port

        self.ports = [free_port(), free_port()]
        env = {**env, "POCKETRANK_WORKERS": "1", "POCKETRANK_UPDATER": "external", "PYTHONPATH": str(REPO),
               "POCKETRANK_ADDRESS_RATE": "0"}  # a load generator on one address, not a device
        self.procs = [subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "python:pocketrank.server.gunicorn_conf",
                                        "pocketrank.server.wsgi:app"], env={**env, "POCKETRANK_BIND": f"127.0.0.1:{p}"},
                                       cwd=REPO, stdout=open(logdir / f"api-{p}.log", "ab"), stderr=subprocess.STDOUT)
                      for p in self.ports]
        self.procs += [subprocess.Popen([sys.executable, "-m", "pocketrank", "updater", "--idle-wait", "1"], env=env,
                                        cwd=REPO, stdout=open(logdir / f"updater-{i}.log", "ab"),
                                        stderr=subprocess.STDOUT) for i in range(2)]
        self.clients = [Client("127.0.0.1", p) for p in self.ports]
        deadline = time.monotonic() + 90
        try:  # each server up, and an event through each to an updater
            for i, c in enumerate(self.clients):
                wait_ready(c, self.procs, "/healthz", deadline, f"a server did not start; see {logdir}")
                warm_event(c, f"warm-{i}", deadline, f"the updaters did not fold an event; see {logdir}")
        except RuntimeError:
            self.stop()
            raise
        time.sleep(2.5)  # past the first consumer session: both updaters hold a share of the partitions

    def stop(self) -> None:
        stop_processes(self.procs)


def freshness(dep: Deployment, store, seconds: float, tag: str) -> dict:
    probe = FreshnessProbe(store, DIM)
    posts: list[float] = []

    def call(i: int) -> None:
        users = [f"fresh-{tag}-{i}-{j}" for j in range(10)]
        evs = [{"event_id": f"fr-{tag}-{i}-{j}", "user_id": u, "device_id": "bench", "type": "click",
                "item_id": 1 + (i * 10 + j) % N_ITEMS, "timestamp": time.time()} for j, u in enumerate(users)]
        t0 = time.perf_counter()
        dep.clients[i % 2].post_json("/v1/events", json.dumps({"events": evs}).encode())
        answered = time.perf_counter()
        posts.append((answered - t0) * 1000)
        for u in users:
            probe.expect(u, answered)

    res = open_loop(100, seconds, call, threads=16)
    missing = probe.finish()
    lat = probe.latencies_ms
    return {"events": len(lat), "never_seen": missing, "errors": res.errors, "p50_ms": round(pct(lat, 50), 1),
            "p99_ms": round(pct(lat, 99), 1), "post_p99_ms": round(pct(posts, 99), 1)}


def ingestion(dep: Deployment, store, seconds: float, tag: str) -> dict:
    rng = np.random.default_rng(1)
    bodies = []
    for b in range(int(seconds * 100) + 50):
        now = time.time()
        bodies.append(json.dumps({"events": [
            {"event_id": f"{tag}-{b}-{j}", "user_id": f"s{int(rng.integers(1, 100_001))}", "device_id": "bench",
             "type": "click", "item_id": int(rng.integers(1, N_ITEMS + 1)), "timestamp": now}
            for j in range(500)]}).encode())
    counter = iter(range(len(bodies)))

    def call(w: int, i: int) -> int:
        return dep.clients[w % 2].post_json("/v1/events", bodies[next(counter)])["accepted"]

    t0 = time.perf_counter()
    units, elapsed, lats = closed_loop(4, seconds, call)
    while store.pending_count() and time.perf_counter() - t0 < 300:
        time.sleep(0.1)
    folded_in = time.perf_counter() - t0
    return {"appended_per_s": round(units / elapsed), "folded_per_s": round(units / folded_in),
            "post_p99_ms": round(pct(lats, 99), 1), "events": units}


def run_store(name: str, env: dict, store, home: Path, ranker: Path, seconds: float) -> dict:
    seed(store, home, ranker)
    dep = Deployment(env, home)
    try:
        out = {"freshness": freshness(dep, store, seconds, name)}
        log(f"  {name}: event -> embedding at 1,000 events/s: {out['freshness']}")
        out["ingestion"] = ingestion(dep, store, seconds, f"ing-{name}")
        log(f"  {name}: ingestion: {out['ingestion']}")
    finally:
        dep.stop()
    return out


def cluster_section(args) -> str:
    from bench._redis_cluster import ClusterUnavailable, LocalCluster
    from bench.server import export_fresh_ranker, start_redis
    from pocketrank.server.stores.redis import RedisStore
    from pocketrank.server.stores.redis_cluster import RedisClusterStore

    seconds = args.seconds
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmpdir:
        tmp = Path(tmpdir)
        ranker = tmp / "ranker.fp32.onnx"
        export_fresh_ranker(ranker)
        results: dict[str, dict] = {}
        home = tmp / "single"
        home.mkdir()
        proc, url = start_redis(home)
        if proc is None:
            raise ClusterUnavailable("no redis-server binary (apt-get install redis-server)")
        try:
            store = RedisStore(url)
            env = {**os.environ, "POCKETRANK_HOME": str(home), "POCKETRANK_STORE": "redis", "POCKETRANK_REDIS_URL": url}
            results["one Redis"] = run_store("single", env, store, home, ranker, seconds)
            store.close()
        finally:
            proc.terminate()
            proc.wait(10)
        home = tmp / "cluster"
        home.mkdir()
        with LocalCluster(tmp / "nodes") as cluster:
            store = RedisClusterStore(cluster.url, partitions=16)
            env = {**os.environ, "POCKETRANK_HOME": str(home), "POCKETRANK_STORE": "redis",
                   "POCKETRANK_REDIS_URL": cluster.url, "POCKETRANK_REDIS_CLUSTER": "1"}
            results["Redis Cluster, 3 masters, 16 partitions"] = run_store("cluster", env, store, home, ranker, seconds)
            store.close()
    return report(results, seconds)


def report(results: dict[str, dict], seconds: float) -> str:
    rows = "\n".join(
        f"| {name} | {r['freshness']['p50_ms']} / {r['freshness']['p99_ms']} ms "
        f"({r['freshness']['events']:,} events, {r['freshness']['never_seen']} never folded) | "
        f"{r['ingestion']['appended_per_s']:,} | {r['ingestion']['folded_per_s']:,} | {r['ingestion']['post_p99_ms']} ms |"
        for name, r in results.items())
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"### Measured: ingestion on one Redis and on a Redis Cluster (`python -m bench scale -- --only cluster`)\n\n"
            f"Two API servers (gunicorn, one worker each) and two `pocketrank updater` processes on each store, "
            f"{seconds:.0f} s per phase, loopback, everything on this machine's {os.cpu_count()} cores (load "
            f"average when the run ended: {load}). Event -> embedding: 1,000 events/s offered (100 POSTs/s of "
            f"10 events, alternating servers), from the POST's answer until the store holds the folded record. "
            f"Ingestion: 4 clients posting 500-event batches to both servers; folded/s counts from the first "
            f"POST until the updaters caught up.\n\n"
            f"| store | event -> embedding p50 / p99 at 1,000 events/s | appended events/s | folded events/s | "
            f"POST p99 (500 events) |\n| --- | ---: | ---: | ---: | ---: |\n{rows}\n")
