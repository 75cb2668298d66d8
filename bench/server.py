"""The real-time server under load, on loopback: ingestion, event-to-embedding freshness, and
recommendation latency against offered load, on SQLite and on Redis side by side.

    python -m bench server                      # both stores (Redis if a redis-server binary exists)
    python -m bench.server --quick              # shorter runs, for a smoke check
    python -m bench server -- --model sequence  # the sequence model: its encoder in every answer and embedding

Catalogue: the marketplace simulator's 50,000 products (categories, prices,
stock) and 100,000 users (segments). The simulator has no trained vectors, so
items get SEEDED RANDOM UNIT VECTORS (dim 64) and users random unit tastes;
the ranker is a freshly initialised click model exported to fp32 ONNX (the
same graph and cost as a trained one). Latency, not quality, is measured here.
With `--model sequence` the model is the sequence model `pocketrank train` makes by
default: its user encoder freshly initialised (server/training/seqmodel.UserEncoder,
dim 64, 2 layers, max_len 50) and exported by the exporter's own function, and the
ranker it ships when no learned ranker beats retrieval order (sigmoid of the inner
product). Every seeded user holds a full recent history (50 clicks), so every answer
runs the encoder over 50 events. A user's embedding is the encoder over their recent
events, computed when it is read, so "event -> embedding" is the updater's append
plus that encoder call on the record the store then holds: the freshness users are
seeded with 50 events too, and the probe runs server/online/encoding.SequenceEncoder
(the server's class) on each record, adding its own time to the user's.
The server is the production entry point (gunicorn, 2 workers x 4 threads);
the load generator runs on the same machine and shares its cores.
"""

from __future__ import annotations

import argparse
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
DIM, N_ITEMS, N_USERS, MODEL = 64, 50_000, 100_000, "bench-random-init"
TARGETS = {"freshness_p99_ms": 50.0, "ingest_events_per_s": 20_000, "recs_p99_ms_at_200": 25.0}
TYPES = ("impression",) * 6 + ("view", "view", "click", "add_to_cart", "purchase")
HISTORY = 50  # --model sequence: the recent events each seeded user holds (the encoder's max_len)
# --model sequence: users with a history kept apart for the freshness runs, half for each of the two runs
FRESH_POOL = [f"fh{j}" for j in range(20_000)]


def log(msg: str) -> None:
    print(msg, flush=True)


def build_catalogue(seed: int = 0):
    from lab.simulator import MarketplaceSimulator, SimConfig

    sim = MarketplaceSimulator(SimConfig(n_users=N_USERS, n_items=N_ITEMS, n_days=1, new_items_per_day=0, seed=seed))
    rng = np.random.default_rng(seed)
    vecs = rng.normal(size=(N_ITEMS, DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    tastes = rng.normal(size=(N_USERS, DIM)).astype(np.float32)
    tastes /= np.linalg.norm(tastes, axis=1, keepdims=True)
    return sim.items, {i + 1: vecs[i] for i in range(N_ITEMS)}, sim.users, tastes


def export_fresh_ranker(path: Path) -> None:
    import torch

    from pocketrank.exporter.onnx_export import export_ranker
    from pocketrank.server.training.model import ClickModel

    torch.manual_seed(0)
    export_ranker(ClickModel(DIM, 128), path, DIM)


def export_fresh_encoder(model_dir: Path) -> None:
    """A freshly initialised sequence model's encoder and config.json, and the retrieval-order ranker it ships
    with (exporter/sequence_export.py): the shipped graphs and their cost."""
    import json

    import torch

    from pocketrank.exporter.sequence_export import export_retrieval_ranker, export_sequence_encoder
    from pocketrank.server.online.encoding import ENCODER_FP32
    from pocketrank.server.training.seqmodel import SeqConfig, UserEncoder

    torch.manual_seed(0)
    config = SeqConfig(n_items=N_ITEMS, dim=DIM)
    encoder = UserEncoder(config)
    for emb in (encoder.type_emb, encoder.gap_emb):  # trained ones are not zero: the same arithmetic either way
        torch.nn.init.normal_(emb.weight, std=0.02)
    model_dir.mkdir(parents=True, exist_ok=True)
    export_sequence_encoder(encoder, model_dir / ENCODER_FP32, model_dir / "encoder.int8.onnx", DIM, config.max_len)
    export_retrieval_ranker(model_dir / "ranker.fp32.onnx", model_dir / "ranker.int8.onnx", DIM)
    (model_dir / "config.json").write_text(json.dumps({"config": config.to_dict()}))


def seed(store, items, vectors, users, tastes, ranker: Path, home: Path, model: str = "fold") -> None:
    from pocketrank.server.online import segments
    from pocketrank.server.stores.base import UserRecord
    from pocketrank.shared.features import UserState

    store.put_items(items, vectors)
    records = {u["user_id"]: UserRecord(UserState(tastes[i] * 5.0, 5.0, 10), 0, updated_at=time.time())
               for i, u in enumerate(users)}
    if model == "sequence":  # every answer reads a full history; the freshness users' too
        histories(store, records, FRESH_POOL)
    store.put_user_records(records)
    profiles = {u["user_id"]: u["segment"] for u in users}
    store.set_meta(segments.META_KEY, segments.dumps(segments.compute_segments(
        {u: r.state.s / r.state.w for u, r in records.items() if u in profiles}, profiles)))
    store.set_meta("current_model", MODEL)
    (home / "models" / MODEL).mkdir(parents=True, exist_ok=True)
    if model == "sequence":
        export_fresh_encoder(home / "models" / MODEL)
    else:
        shutil.copy(ranker, home / "models" / MODEL / "ranker.fp32.onnx")


def histories(store, records: dict, extra: list[str]) -> None:
    """Give every record (and `extra` new users) HISTORY recent clicks on random products, a minute apart."""
    from pocketrank.server.online.catalogue import load_catalogue
    from pocketrank.server.stores.base import RECENT_DTYPE, TYPE_CODE, UserRecord
    from pocketrank.shared.features import UserState

    ids = load_catalogue(store).ids  # store indexes: what a record's events hold
    rng = np.random.default_rng(3)
    now = time.time()
    for u in extra:
        records[u] = UserRecord(UserState(rng.normal(size=DIM).astype(np.float32), 5.0, 10), 0, updated_at=now)
    for rec in records.values():
        recent = np.zeros(HISTORY, RECENT_DTYPE)
        recent["ts"] = now - 60.0 * np.arange(HISTORY, 0, -1)
        recent["item"] = ids[rng.integers(len(ids), size=HISTORY)]
        recent["type"] = TYPE_CODE["click"]
        rec.recent = recent
        rec.state = UserState(rec.state.s, rec.state.w, HISTORY)


class Server:
    """gunicorn with the production config, plus (external mode) `pocketrank updater`."""

    def __init__(self, env: dict, port: int, external: bool, logdir: Path):
        self.port = port
        env = {**env, "POCKETRANK_BIND": f"127.0.0.1:{port}", "POCKETRANK_WORKERS": "2",
               "POCKETRANK_UPDATER": "external" if external else "embedded", "PYTHONPATH": str(REPO),
               "POCKETRANK_ADDRESS_RATE": "0"}  # a load generator on one address, not a device
        self.procs = [subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "python:pocketrank.server.gunicorn_conf",
                                        "pocketrank.server.wsgi:app"], env=env, cwd=REPO,
                                       stdout=open(logdir / "gunicorn.log", "ab"), stderr=subprocess.STDOUT)]
        if external:
            self.procs.append(subprocess.Popen([sys.executable, "-m", "pocketrank", "updater", "--idle-wait", "1"],
                                               env=env, cwd=REPO, stdout=open(logdir / "updater.log", "ab"),
                                               stderr=subprocess.STDOUT))
        client = Client("127.0.0.1", port)
        deadline = time.monotonic() + 90
        try:  # a warm system: one event through the updater before the clock starts
            wait_ready(client, self.procs, "/v1/recommendations?user_id=s1&k=20", deadline,
                       f"server did not start; see {logdir}/gunicorn.log")
            warm_event(client, f"warm-{port}", deadline, f"the updater did not fold an event; see {logdir}/updater.log")
        except RuntimeError:
            self.stop()
            raise

    def stop(self) -> None:
        stop_processes(self.procs)


def events_body(prefix: str, n: int, rng, users: int = N_USERS, user: str | None = None) -> bytes:
    now = time.time()
    evs = [{"event_id": f"{prefix}-{j}", "user_id": user or f"s{int(rng.integers(1, users + 1))}", "device_id": "bench",
            "type": TYPES[int(rng.integers(len(TYPES)))], "item_id": int(rng.integers(1, N_ITEMS + 1)),
            "timestamp": now} for j in range(n)]
    return json.dumps({"events": evs}).encode()


def bench_ingestion(client: Client, seconds: float, tag: str = "ing") -> dict:
    rng = np.random.default_rng(1)
    # Enough batches for 64,000 events/s (Redis append-only reached 57,000 here): running out
    # would end the load generator's threads early.
    bodies = [events_body(f"{tag}-{b}", 500, rng) for b in range(int(seconds * 128) + 50)]
    counter = iter(range(len(bodies)))

    def call(w: int, i: int) -> int:
        return client.post_json("/v1/events", bodies[next(counter)])["accepted"]

    units, elapsed, lats = closed_loop(4, seconds, call)
    return {"events_per_s": round(units / elapsed), "batch": 500, "clients": 4,
            "post_p50_ms": round(pct(lats, 50), 1), "post_p99_ms": round(pct(lats, 99), 1)}


def bench_freshness(client: Client, store, seconds: float, tag: str, encode=None, pool: list[str] | None = None) -> dict:
    """1,000 events/s as 100 POSTs/s of 10 events, each for a user with no record yet; or, with `pool` (users
    seeded with HISTORY events), each for the pool's next user. `encode` (record -> vector): a sequence
    model's encoder, run on each record before its user's clock stops."""
    probe = FreshnessProbe(store, DIM, encode)
    posts = []
    need = int(seconds * 100 * 1.2) * 10
    if pool is not None and len(pool) < need:
        raise SystemExit(f"the freshness pool has {len(pool):,} users, this run needs up to {need:,}")

    def call(i: int) -> None:
        rng = np.random.default_rng(i)
        users = [f"fresh-{tag}-{i}-{j}" for j in range(10)] if pool is None else pool[10 * i:10 * i + 10]
        evs = [{"event_id": f"fr-{tag}-{i}-{j}", "user_id": u, "device_id": "bench", "type": "click",
                "item_id": int(rng.integers(1, N_ITEMS + 1)), "timestamp": time.time()} for j, u in enumerate(users)]
        t0 = time.perf_counter()
        client.post_json("/v1/events", json.dumps({"events": evs}).encode())
        answered = time.perf_counter()
        posts.append((answered - t0) * 1000)
        for u in users:
            probe.expect(u, answered, 1 if pool is None else HISTORY + 1)

    res = open_loop(100, seconds, call, threads=16)
    missing = probe.finish()
    lat = probe.latencies_ms
    return {"events_per_s": 1000, "events": len(lat), "never_seen": missing, "encode_failures": probe.failures,
            "p50_ms": round(pct(lat, 50), 2), "p99_ms": round(pct(lat, 99), 2),
            "post_p50_ms": round(pct(posts, 50), 2), "post_p99_ms": round(pct(posts, 99), 2), "errors": res.errors}


def bench_recommendations(client: Client, seconds: float, rates) -> list[dict]:
    curve = []
    for rate in rates:
        paths: dict[str, int] = {}

        def call(i: int) -> None:
            status, body = client.request("GET", f"/v1/recommendations?user_id=s{1 + (i * 7919) % N_USERS}&k=20")
            if status != 200:
                raise RuntimeError(status)
            path = json.loads(body)["path"]
            paths[path] = paths.get(path, 0) + 1  # a share only: a lost increment between threads is noise

        row = open_loop(rate, seconds, call).summary()
        row["personal"] = round(paths.get("personal", 0) / max(sum(paths.values()), 1), 3)
        curve.append(row)
        log(f"    offered {rate:>5} req/s: achieved {row['achieved']:>7} p50 {row['p50_ms']:>7} ms "
            f"p99 {row['p99_ms']:>8} ms errors {row['errors']} personal {row['personal']:.0%}")
        if row["achieved"] < 0.9 * rate or row["p99_ms"] > 2000:
            break  # saturated: past here only the queue grows
    return curve


def retrieval_cost(vectors: dict) -> dict:
    """Exact top-200 over the whole catalogue, one thread: why there is no ANN index."""
    from pocketrank.server.online.catalogue import Catalogue
    from pocketrank.server.online.retrieval import retrieve

    ids = np.arange(1, N_ITEMS + 1, dtype=np.int64)
    cat = Catalogue(ids, np.stack([vectors[int(i)] for i in ids]), {}, {})
    rng = np.random.default_rng(2)
    lat = []
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # then BLAS may use its thread pool here, unlike the server (server/wsgi.py)
        from contextlib import nullcontext as threadpool_limits

    with threadpool_limits(1):
        for _ in range(300):
            u = rng.normal(size=DIM).astype(np.float32)
            t0 = time.perf_counter()
            retrieve(cat, u, set(), 200, True, None)  # what Ranker.retrieve runs below the ANN threshold
            lat.append((time.perf_counter() - t0) * 1000)
    return {"items": N_ITEMS, "p50_ms": round(pct(lat, 50), 2), "p99_ms": round(pct(lat, 99), 2)}


def start_redis(workdir: Path):
    binary = shutil.which("redis-server")
    if binary is None:
        return None, None
    from pocketrank.demo_app.localserver import free_port

    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir),
                             "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return proc, f"redis://127.0.0.1:{port}/0"


def encoder_fn(home: Path, store):
    """record -> the user's vector as the server computes it for the home's sequence model (the shipped
    server/online/encoding.record_vector_fn; None: a fold model). A record none of whose products it knows
    would cost no encoder call and flatter the figure: that raises, and the probe counts the user as an
    encoder failure."""
    from pocketrank.server.home import Home
    from pocketrank.server.online.encoding import record_vector_fn

    vector_of = record_vector_fn(Home(home), store)
    if vector_of is None:
        return None

    def encode(record):
        uv = vector_of(record)
        if uv is None:
            raise RuntimeError("the encoder read none of the record's products")
        return uv

    return encode


def run_backend(name: str, env: dict, store, data, ranker: Path, home: Path, quick: bool,
                model: str = "fold") -> dict:
    from pocketrank.demo_app.localserver import free_port

    t0 = time.perf_counter()
    seed(store, *data, ranker, home, model)
    encode = encoder_fn(home, store)
    half = len(FRESH_POOL) // 2  # the embedded and the external run each their own users
    pools = (FRESH_POOL[:half], FRESH_POOL[half:]) if model == "sequence" else (None, None)
    log(f"  seeded {N_ITEMS:,} items and {N_USERS:,} users in {time.perf_counter() - t0:.1f} s")
    out: dict = {}
    secs = 3 if quick else 6
    server = Server(env, free_port(), external=False, logdir=home)
    try:
        client = Client("127.0.0.1", server.port)
        out["ingestion"] = bench_ingestion(client, secs)
        log(f"  ingestion (embedded updater folds each batch before answering): {out['ingestion']}")
        out["freshness_embedded"] = bench_freshness(client, store, secs, "emb", encode, pools[0])
        log(f"  freshness, embedded updater: {out['freshness_embedded']}")
        log("  recommendations, k=20, p50/p99 against offered load:")
        rates = (50, 200, 400) if quick else (50, 100, 200, 400, 800, 1600)
        out["recommendations"] = bench_recommendations(client, 3 if quick else 4, rates)
    finally:
        server.stop()
    server = Server(env, free_port(), external=True, logdir=home)
    try:
        client = Client("127.0.0.1", server.port)
        out["freshness_external"] = bench_freshness(client, store, secs, "ext", encode, pools[1])
        log(f"  freshness, updater as its own process: {out['freshness_external']}")
        out["ingestion_external"] = bench_ingestion(client, secs, "ing-ext")
        t0, backlog = time.perf_counter(), store.pending_count()
        while store.pending_count() and time.perf_counter() - t0 < 120:
            time.sleep(0.2)
        out["ingestion_external"]["backlog_after"] = backlog
        out["ingestion_external"]["caught_up_s"] = round(time.perf_counter() - t0, 1)
        log(f"  ingestion, append only (the updater process folds behind): {out['ingestion_external']}")
    finally:
        server.stop()
    return out


def report(results: dict, load_at_start: float) -> None:
    log("\n== summary (loopback; load generator on the same 2 cores; "
        f"load average {load_at_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end)")
    log(f"{'':44s}" + "".join(f"{b:>14s}" for b in results) + "      target")

    def row(label, get, target=""):
        log(f"{label:44s}" + "".join(f"{get(r):>14}" for r in results.values()) + f"      {target}")

    row("ingestion, events/s, embedded (append+fold)", lambda r: f"{r['ingestion']['events_per_s']:,}", ">= 20,000")
    row("ingestion, events/s, append only", lambda r: f"{r['ingestion_external']['events_per_s']:,}", ">= 20,000")
    row("  then the updater caught up in, s", lambda r: r["ingestion_external"]["caught_up_s"])
    row("event -> embedding p99, embedded, ms", lambda r: r["freshness_embedded"]["p99_ms"], "< 50")
    row("event -> embedding p99, updater process, ms", lambda r: r["freshness_external"]["p99_ms"], "< 50")
    row("event -> embedding p50, updater process, ms", lambda r: r["freshness_external"]["p50_ms"])
    row("  events never seen / encoder failures", lambda r: "{} / {}".format(
        r["freshness_embedded"]["never_seen"] + r["freshness_external"]["never_seen"],
        r["freshness_embedded"]["encode_failures"] + r["freshness_external"]["encode_failures"]))

    def at(r, rate, key):
        hit = [c for c in r["recommendations"] if c["offered"] == rate]
        return hit[0][key] if hit else "-"

    row("recommendations p50 at 200 req/s, ms", lambda r: at(r, 200, "p50_ms"))
    row("recommendations p99 at 200 req/s, ms", lambda r: at(r, 200, "p99_ms"), "< 25")
    row("  answers on the personal path at 200 req/s", lambda r: at(r, 200, "personal"))
    row("recommendations, highest rate sustained", lambda r: max(
        (c["offered"] for c in r["recommendations"] if c["achieved"] >= 0.9 * c["offered"]), default=0))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench server", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    parser.add_argument("--backends", default="sqlite,redis")
    parser.add_argument("--model", choices=("fold", "sequence"), default="fold",
                        help="the served model: the fold (a click model over the folded state) or the sequence model")
    args = parser.parse_args(argv)
    from pocketrank.server.stores import SQLiteStore

    load_at_start = os.getloadavg()[0]  # the figures mean little on a busy machine: say how busy it was
    with tempfile.TemporaryDirectory(prefix="bench-server-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        data = build_catalogue()
        ranker = tmp / "ranker.fp32.onnx"
        export_fresh_ranker(ranker)
        log(f"catalogue (simulator, random unit vectors) and fresh fp32 ONNX ranker in {time.perf_counter() - t0:.1f} s")
        log(f"exact retrieval, top-200 of {N_ITEMS:,} x {DIM}: {retrieval_cost(data[1])}")
        results = {}
        for name in args.backends.split(","):
            home = tmp / name
            home.mkdir()
            env = {**os.environ, "POCKETRANK_HOME": str(home), "POCKETRANK_STORE": name}
            redis_proc = None
            if name == "redis":
                redis_proc, url = start_redis(home)
                if url is None:
                    log("\n== redis: skipped (no redis-server binary; apt-get install redis-server)")
                    continue
                from pocketrank.server.stores.redis import RedisStore

                env["POCKETRANK_REDIS_URL"] = url
                store = RedisStore(url)
            else:
                store = SQLiteStore(home / "store.sqlite")
            log(f"\n== {name}")
            try:
                results[name] = run_backend(name, env, store, data, ranker, home, args.quick, args.model)
            finally:
                store.close()
                if redis_proc:
                    redis_proc.terminate()
                    redis_proc.wait(10)
        log(f"\n== model: {args.model}")
        report(results, load_at_start)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
