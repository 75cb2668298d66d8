"""The edge SDK's speed and memory: `python -m bench edge`.

Goals (issue 6): recommend() offline, 200 cached candidates, k=20, one thread,
end to end (SQLite read, features, int8 rerank, rules): p50 < 0.5 ms and
p99 < 2 ms, with the model's share; track() p99 < 2 ms with the event durable;
resident size of a process holding the client with 1,000 users cached
< 150 MB.

The bundle is synthetic (seeded): 2,000 items with random 64-d vectors in 19
categories, 1,000 users whose 200 candidates are their top items by inner
product, and the product brief's click model, untrained (random weights, same
shape and cost), exported and int8-quantized by the project's own exporter. It
is signed and applied through the SDK's real sync path; only the HTTP hop is
replaced by an in-memory answer, since no network is measured here. Quality is
not measured here (see `bench quality`), only time and memory.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

N_ITEMS, N_USERS, N_CANDIDATES, DIM, K = 2000, 1000, 200, 64, 20
CATEGORIES = [f"genre-{i:02d}" for i in range(19)]
GOALS = {"recommend_p50_ms": 0.5, "recommend_p99_ms": 2.0, "track_p99_ms": 2.0, "rss_mb": 150.0}


def _ranker(directory: Path) -> bytes:
    import torch

    from pocketrank.exporter.onnx_export import export_ranker
    from pocketrank.exporter.quantize import quantize_ranker
    from pocketrank.server.training.model import ClickModel

    torch.manual_seed(0)
    export_ranker(ClickModel(DIM, 128), directory / "ranker.fp32.onnx", DIM)
    quantize_ranker(directory / "ranker.fp32.onnx", directory / "ranker.int8.onnx")
    return (directory / "ranker.int8.onnx").read_bytes()


def synthetic_bundle(directory: Path) -> tuple[dict, dict[str, bytes], str]:
    """(sync answer for every user, artifact bytes by URL, public key hex), signed like a real publish."""
    from pocketrank.exporter.signing import init_keys, load_private, public_key_hex, sign
    from pocketrank.shared import wire
    from pocketrank.shared.features import DECAY, TYPE_WEIGHTS, UserState

    rng = np.random.default_rng(6)
    ids = np.arange(1, N_ITEMS + 1, dtype=np.int64)
    vecs = (rng.normal(size=(N_ITEMS, DIM)) * 0.1).astype(np.float32)
    catalog = {"items": [{"item_id": int(i), "title": f"Synthetic item {i}", "category": CATEGORIES[i % 19],
                          "price": float(5 + i % 50), "in_stock": True, "categories": [CATEGORIES[i % 19]]}
                         for i in ids],
               "popular": [int(i) for i in ids[:100]]}
    records, states = {}, {}
    for u in range(N_USERS):
        s = vecs[rng.integers(0, N_ITEMS, 8)].sum(axis=0)
        state = UserState(s.astype(np.float32), 8.0, 8)
        scores = vecs @ (s / 8)
        top = np.argsort(-scores)[:N_CANDIDATES]
        records[f"u{u}"] = wire.pack_candidates(ids[top], 1 / (1 + np.exp(-scores[top])))
        states[f"u{u}"] = base64.b64encode(wire.pack_state(state)).decode()
    artifacts = {"ranker": _ranker(directory)}
    now = time.time()
    manifest = {"wire_version": wire.WIRE_VERSION, "version": 1, "created_at": now, "expires_at": now + 30 * 86400,
                "model_version": "bench-untrained", "embedding_dim": DIM,
                "user_state": {"decay": DECAY, "type_weights": dict(TYPE_WEIGHTS)},
                "popular": catalog["popular"], "items": {"count": len(ids), "precision": "f16"},
                "artifacts": {n: {"file": n, "sha256": wire.sha256_hex(b), "length": len(b)}
                              for n, b in artifacts.items()}}
    body = wire.canonical_json(manifest)
    keys = directory / "keys"
    init_keys(keys)
    signer = load_private(keys)  # each record signed for version 1, as a publish does (wire v2)
    from pocketrank.server.bundle.item_entries import build_entries

    # Item entries (wire 4), as a publish signs them; BundleAnswers sends each user's candidates' entries.
    items = build_entries(ids, vecs, {it["item_id"]: it for it in catalog["items"]}, "bench-untrained", 1, signer.sign)
    item_json = {str(i): {"data": base64.b64encode(e.raw).decode(), "sig": base64.b64encode(e.sig).decode()}
                 for i, e in items.items()}
    digests = {u: wire.sha256_digest(wire.decompress(b)) for u, b in records.items()}
    entries = {u: {"kind": "full", "sha256": digests[u].hex(), "data": base64.b64encode(b).decode(),
                   "sig": base64.b64encode(signer.sign(wire.record_message(1, u, digests[u]))).decode()}
               for u, b in records.items()}
    answer = {"version": 1, "manifest": base64.b64encode(body).decode(),
              "signature": base64.b64encode(sign(body, keys)).decode(),
              "records": entries, "states": states,
              "unknown_users": [], "artifacts": {n: f"/v1/artifacts/1/{n}" for n in artifacts},
              "items": item_json,
              "candidates": {u: wire.unpack_candidates(b)[0].tolist() for u, b in records.items()},
              "popular": catalog["popular"],
              # what BundleAnswers seals each answer with (wire 6), as the server does
              "item_shas": {i: e.sha256 for i, e in items.items()}, "signer": signer}
    return answer, {f"/v1/artifacts/1/{n}": b for n, b in artifacts.items()}, public_key_hex(keys)


class BundleAnswers:
    """The server's side of GET /v1/sync and /v1/artifacts for one published bundle, without the HTTP hop."""

    def __init__(self, answer: dict, files: dict[str, bytes]):
        self.answer, self.files = answer, files

    def get_json(self, url, timeout, params=None, headers=None, limit=None):
        from pocketrank.shared import wire

        a, cursor = self.answer, int(params["cursor"])
        if cursor >= a["version"]:
            return 304, None
        users = params["users"].split(",")
        want = set(a["popular"]).union(*(a["candidates"][u] for u in users))
        want |= {int(i) for i in params.get("items", "").split(",") if i}
        body = {k: v for k, v in a.items() if k not in ("candidates", "popular", "item_shas", "signer")}
        body.update(cursor=cursor, records={u: a["records"][u] for u in users}, states={u: a["states"][u] for u in users},
                    items={str(i): a["items"][str(i)] for i in sorted(want)},
                    list_digests={u: wire.items_digest(a["candidates"][u], a["item_shas"]).hex() for u in users},
                    popular_digest=wire.items_digest(a["popular"], a["item_shas"]).hex())
        block = wire.sealed_block(body["states"], body["unknown_users"], body["list_digests"], body["popular_digest"])
        body["seal"] = base64.b64encode(a["signer"].sign(wire.seal_message(a["version"], cursor, "bench-untrained",
                                                                            block))).decode()
        return 200, body

    def get_bytes(self, url, timeout, start=0, limit=None):
        return self.files[url][start:], bool(start)

    def post_json(self, url, body, timeout, headers=None):
        raise ConnectionError("no network in this benchmark")

    def close(self):
        pass


RSS_SCRIPT = textwrap.dedent("""
    import json, sys
    def rss():
        fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
        return {k: int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM")}
    import numpy, onnxruntime, httpx, sqlite_utils
    import pocketrank.edge_runtime.client
    bare = rss()
    from pocketrank.edge_runtime import EdgeClient
    client = EdgeClient(sys.argv[1], None, base_url="http://127.0.0.1:9")
    users = client.cache.users()
    for u in users:
        client.recommend(u, 20, allow_server=False)
    print(json.dumps({"users": len(users), "bare": bare, "client": rss()}))
""")


MEASURE_SCRIPT = textwrap.dedent("""
    import json, os, statistics, sys, time
    import numpy as np
    from pocketrank.edge_runtime import EdgeClient

    def pct(xs, q):
        return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))]

    def summary(wall, cpu):
        ms = [x * 1000 for x in wall]
        return {"p50": statistics.median(ms), "p90": pct(ms, 0.9), "p99": pct(ms, 0.99), "max": max(ms),
                "cpu_p50": statistics.median(cpu) * 1000, "cpu_p99": pct(cpu, 0.99) * 1000, "n": len(ms)}

    try:
        os.nice(-10)  # a foreground app's thread runs at raised priority; neighbours here are other work
        niced = True
    except OSError:
        niced = False
    client = EdgeClient(sys.argv[1], None, base_url="http://127.0.0.1:9", device_id="bench")
    k, n_items = int(sys.argv[2]), int(sys.argv[3])
    rng = np.random.default_rng(0)
    users = [f"u{u}" for u in rng.integers(0, 1000, 4000)]
    for u in users[:500]:  # warm: onnxruntime's first runs, SQLite's page cache
        client.recommend(u, k, allow_server=False)
    wall, cpu, stages = [], [], {s: [] for s in client.local.stages}
    for u in users:
        t, c = time.perf_counter(), time.thread_time()
        rec = client.recommend(u, k, allow_server=False)
        wall.append(time.perf_counter() - t)
        cpu.append(time.thread_time() - c)
        for s, v in client.local.stages.items():
            stages[s].append(v)
    assert rec.source == "edge" and len(rec.items) == k
    out = {"niced": niced, "recommend": summary(wall, cpu),
           "stages_us": {s: statistics.median(v) * 1e6 for s, v in stages.items()},
           "model_share": sum(stages["model"]) / sum(wall)}
    wall, cpu = [], []
    for i in range(2000):
        t, c = time.perf_counter(), time.thread_time()
        client.track(users[i], "view" if i % 3 else "click", int(rng.integers(1, n_items)))
        wall.append(time.perf_counter() - t)
        cpu.append(time.thread_time() - c)
    out["track"] = summary(wall, cpu)
    wall, cpu = [], []
    for i in range(100):
        t, c = time.perf_counter(), time.thread_time()
        client.track(users[i], "purchase", int(rng.integers(1, n_items)))
        wall.append(time.perf_counter() - t)
        cpu.append(time.thread_time() - c)
    out["purchase"] = summary(wall, cpu)
    out["torch_loaded"] = "torch" in sys.modules
    print(json.dumps(out))
""")


def _subprocess(script: str, *args) -> dict:
    proc = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr)
    return json.loads(proc.stdout)


def _line(label: str, m: dict) -> str:
    return (f"  {label:5s} wall p50 {m['p50']:.3f} ms  p90 {m['p90']:.3f}  p99 {m['p99']:.3f}  max {m['max']:.2f}"
            f"   | CPU p50 {m['cpu_p50']:.3f}  p99 {m['cpu_p99']:.3f}")


def main(argv: list[str]) -> int:
    from pocketrank.edge_runtime import EdgeClient

    print(__doc__.split("\n\n")[0])
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} (other work on it widens p99)")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        answer, files, key = synthetic_bundle(tmp)
        print(f"bundle: {N_ITEMS} items, {N_USERS} users x {N_CANDIDATES} candidates, int8 ranker "
              f"{len(files['/v1/artifacts/1/ranker']):,} B ({time.perf_counter() - t0:.1f} s to make)")
        db = tmp / "device.sqlite"
        client = EdgeClient(db, key, transport=BundleAnswers(answer, files), device_id="bench")
        t0 = time.perf_counter()
        client.sync([f"u{u}" for u in range(N_USERS)])
        client.close()
        print(f"sync of {N_USERS} users: {time.perf_counter() - t0:.1f} s, database {db.stat().st_size / 1e6:.1f} MB")

        # Measured in a fresh process, as an app would hold the SDK: without torch (which the
        # bundle's export needed) and its idle threads, which alone spread p99 here; and after
        # the sync's 56 MB have reached the disk, so its write-back does not stand in for track().
        os.sync()
        m = _subprocess(MEASURE_SCRIPT, db, K, N_ITEMS)
        print(f"\nmeasured in a fresh process (torch loaded: {m['torch_loaded']}), "
              f"{'raised priority (nice -10)' if m['niced'] else 'normal priority'}; "
              "CPU = this thread's CPU time, i.e. the cost without the time other processes held the core")
        r = m["recommend"]
        print(f"\nrecommend() offline, {N_CANDIDATES} candidates, k={K}, {r['n']} calls over 1,000 users, one thread:")
        print(_line("", r))
        print("  median per stage: " + ", ".join(f"{s} {v:.0f} us" for s, v in m["stages_us"].items()))
        print(f"  the model's share of the time: {m['model_share']:.0%} (onnxruntime session.run, 200 candidates)")
        print(f"\ntrack(), committed before it returns (survives the app being killed), {m['track']['n']} views/clicks:")
        print(_line("", m["track"]))
        print(f"track() purchase, also fsynced (survives power loss), {m['purchase']['n']} calls:")
        print(_line("", m["purchase"]) + "   <- this disk's fsync")

        mem = _subprocess(RSS_SCRIPT, db)
        rss = mem["client"]["VmHWM"]
        print(f"\nmemory, a fresh process holding the client, {mem['users']} users cached, each recommended once:")
        print(f"  peak resident {rss:.0f} MB (now {mem['client']['VmRSS']:.0f} MB); "
              f"the imports alone {mem['bare']['VmRSS']:.0f} MB")

    results = {"recommend_p50_ms": r["p50"], "recommend_p99_ms": r["p99"], "track_p99_ms": m["track"]["p99"],
               "rss_mb": rss}
    print("\ngoals (wall clock):")
    for name, goal in GOALS.items():
        print(f"  {name:18s} {results[name]:8.3f}  goal < {goal:<6}  {'ok' if results[name] < goal else 'MISSED'}")
    return 0 if all(results[n] < g for n, g in GOALS.items()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
