"""Scale: the opt-in engines past one machine's defaults, each against the default, side by side.

    python -m bench scale                                  # every section (`make bench`)
    python -m bench scale -- --only ann                    # one section
    python -m bench scale -- --only ann --sizes 20000 --users 100     # a quick look

Sections:

cluster: ingestion on a 3-master Redis Cluster beside one Redis in the same run, two API servers and
two updater processes on each (bench/_scale_cluster.py): event-to-embedding p50/p99 at 1,000 events/s
offered, events/s appended and folded. Figures go to docs/scaling.md.

ann: retrieval at catalogue scale. At 200,000 and 1,000,000 products: the exact scan (what serves
below POCKETRANK_ANN_MIN_ITEMS) against the shipped index (server/online/ann.py: faiss HNSW on
vectors augmented for inner product) at several efSearch widths; at the smallest size also the peer
it was chosen over (hnswlib, same augmentation and parameters; when installed) and faiss HNSW on raw
inner products (what the augmentation is for). Each query goes through pocketrank.server.online.retrieval.retrieve, the function the
ranker calls: recall@200 against the exact top 200 with nothing excluded and with the user's 50
history items excluded (the exact answer recomputed without them), p50/p99 per query on one thread,
build time on BUILD_THREADS threads, and the index's size. Vectors: lab/catalogue_vectors.py (shaped
like a trained item table; users are folds of 50-item histories). Figures go to docs/scaling.md.

ray: `publish` for N users x M products in one process, and on Ray with 1 and 2 workers: wall time,
speed-up, byte-identical output, and the projection to 10 M users x 1 M products (bench/_scale_ray.py).

ray_train: `train` (the sequence model) on MovieLens in one process and on Ray Train with 1 and 2 workers,
the same recipe and epochs: wall time and the server's quality against the one process's
(bench/_scale_ray_train.py).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "scaling.md"
K = 200


def log(msg: str) -> None:
    print(msg, flush=True)


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip().split("load average:")[-1].strip()


class HnswlibPeer:
    """hnswlib with the shipped index's augmentation and parameters, in the AnnIndex search shape."""

    def __init__(self, ids: np.ndarray, vectors: np.ndarray, threads: int):
        import hnswlib

        from pocketrank.server.online import ann

        self.ids = ids
        norms = np.linalg.norm(vectors, axis=1)
        self.radius = float(norms.max())
        self.index = hnswlib.Index(space="l2", dim=vectors.shape[1] + 1)
        self.index.init_index(max_elements=len(ids), M=ann.M, ef_construction=ann.EF_CONSTRUCTION, random_seed=0)
        self.index.set_num_threads(threads)
        for lo in range(0, len(ids), 100_000):
            x = vectors[lo:lo + 100_000]
            aug = np.hstack([x, np.sqrt(np.maximum(self.radius ** 2 - (x * x).sum(1), 0))[:, None]])
            self.index.add_items(aug.astype(np.float32), np.arange(lo, lo + len(x)))
        self.index.set_num_threads(1)
        self.ef_search = ann.EF_SEARCH

    def search(self, user_vec: np.ndarray, k: int) -> np.ndarray:
        self.index.set_ef(max(self.ef_search, 2 * k))
        rows, _ = self.index.knn_query(np.append(user_vec, np.float32(0))[None], k=k)
        return self.ids[rows[0].astype(np.int64)]

    def nbytes(self) -> int:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "i.bin")
            self.index.save_index(path)
            return os.path.getsize(path)


class RawInnerProduct:
    """faiss HNSW on the raw vectors with METRIC_INNER_PRODUCT: the index without the augmentation."""

    def __init__(self, ids: np.ndarray, vectors: np.ndarray, threads: int):
        import faiss

        from pocketrank.server.online import ann

        self.ids = ids
        self.index = faiss.IndexHNSWFlat(vectors.shape[1], ann.M, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = ann.EF_CONSTRUCTION
        faiss.omp_set_num_threads(threads)
        self.index.add(vectors)
        faiss.omp_set_num_threads(1)
        self.ef_search = ann.EF_SEARCH

    def search(self, user_vec: np.ndarray, k: int) -> np.ndarray:
        import faiss

        params = faiss.SearchParametersHNSW(efSearch=max(self.ef_search, 2 * k))
        _, rows = self.index.search(user_vec[None], k, params=params)
        return self.ids[rows[0][rows[0] >= 0]]

    def nbytes(self) -> int:
        import faiss

        return int(faiss.serialize_index(self.index).nbytes)


def exact_truth(items: np.ndarray, users: np.ndarray, history: np.ndarray) -> tuple[list[set], list[set]]:
    """Per user, the exact top K row sets: with nothing excluded, and with the history excluded."""
    plain, excl = [], []
    for lo in range(0, len(users), 50):  # 50 x 1 M scores at a time: 200 MB
        s = users[lo:lo + 50] @ items.T
        for j, row in enumerate(s):
            plain.append(set(np.argpartition(-row, K - 1)[:K].tolist()))
            row[history[lo + j]] = -np.inf
            excl.append(set(np.argpartition(-row, K - 1)[:K].tolist()))
    return plain, excl


def measure(cat, users, history, truth, view) -> dict:
    """recall@K (plain, history excluded) and per-query latency of the shipped retrieve() with this view."""
    from pocketrank.server.online.retrieval import retrieve

    out: dict = {}
    for name, excluded in (("plain", False), ("excl", True)):
        recalls, times = [], []
        for u, uv in enumerate(users):
            exclude = set((history[u] + 1).tolist()) if excluded else set()  # ids are rows + 1
            t = time.perf_counter()
            got = retrieve(cat, uv, exclude, K, ann=view)
            times.append(time.perf_counter() - t)
            recalls.append(len(set((got - 1).tolist()) & truth[name][u]) / K)
        out[f"recall_{name}"] = float(np.mean(recalls))
        out[f"recall_{name}_min"] = float(np.min(recalls))
        out[f"p50_{name}"] = float(np.percentile(times, 50) * 1e3)
        out[f"p99_{name}"] = float(np.percentile(times, 99) * 1e3)
    return out


def ann_section(args) -> str:
    import faiss

    from lab.catalogue_vectors import synthetic_catalogue
    from pocketrank.server.online import ann
    from pocketrank.server.online.ann import AnnIndex, AnnView, view_of
    from pocketrank.server.online.catalogue import Catalogue

    faiss.omp_set_num_threads(1)
    try:
        import hnswlib  # noqa: F401
        peers = True
    except ImportError:
        log("hnswlib is not installed (pip install hnswlib; it builds from source): its rows are left out")
        peers = False
    rows = []
    for n in args.sizes:
        t0 = time.perf_counter()
        data = synthetic_catalogue(n, n_users=args.users, seed=0)
        ids = np.arange(1, n + 1, dtype=np.int64)
        cat = Catalogue(ids, data.items, {}, {})
        plain, excl = exact_truth(data.items, data.users, data.history)
        truth = {"plain": plain, "excl": excl}
        log(f"{n:,} products, {args.users} users: vectors and exact truth in {time.perf_counter() - t0:.0f} s "
            f"(load {load()})")
        r = measure(cat, data.users, data.history, truth, None)
        rows.append({"n": n, "method": "exact scan (default)", "build_s": 0.0, "bytes": data.items.nbytes, **r})
        log(f"  exact: {r}")
        candidates: list[tuple[str, Callable]] = [
            (f"faiss HNSW, augmented (M {ann.M}, efC {ann.EF_CONSTRUCTION})", lambda: AnnIndex(ids, data.items))]
        if peers and n == min(args.sizes):  # the peers at the smallest size only: a 1 M build takes minutes
            candidates.append(("hnswlib, augmented (peer; same M, efC)",
                               lambda: HnswlibPeer(ids, data.items, ann.BUILD_THREADS)))
        if n == min(args.sizes):
            candidates.append(("faiss HNSW, raw inner product (no augmentation)",
                               lambda: RawInnerProduct(ids, data.items, ann.BUILD_THREADS)))
        for name, build in candidates:
            load_before = load()
            t = time.perf_counter()
            index = build()
            build_s = time.perf_counter() - t
            view = AnnView(index, np.zeros(0, dtype=np.int64))
            if isinstance(index, AnnIndex):  # what each catalogue reload (a POST /v1/items) costs the server
                t = time.perf_counter()
                view_of(index, ids, data.items)
                log(f"  re-viewing the catalogue against the shipped index (rows compared with the graph's copy): "
                    f"{time.perf_counter() - t:.2f} s")
            size = index.nbytes()
            for ef in args.ef:
                index.ef_search = ef
                r = measure(cat, data.users, data.history, truth, view)
                shipped = isinstance(index, AnnIndex) and ef == ann.ef_search_for(n)
                label = f"{name}, efS {ef}" + (" (shipped)" if shipped else "")
                rows.append({"n": n, "method": label, "build_s": build_s, "bytes": size, **r})
                log(f"  {label}: build {build_s:.0f} s (load before {load_before}), {r}")
            del index, view
    return report(rows, args)


def report(rows: list[dict], args) -> str:
    head = ("| products | retrieval | recall@200 | recall@200, 50 history items excluded | p50 / p99 ms per query "
            "(excluded) | build | index size |\n| ---: | --- | ---: | ---: | ---: | ---: | ---: |\n")
    lines = []
    for r in rows:
        build = "none" if r["build_s"] == 0 else f"{r['build_s']:.0f} s"
        lines.append(f"| {r['n']:,} | {r['method']} | {r['recall_plain']:.3f} (min {r['recall_plain_min']:.2f}) | "
                     f"{r['recall_excl']:.3f} (min {r['recall_excl_min']:.2f}) | {r['p50_excl']:.2f} / "
                     f"{r['p99_excl']:.2f} | {build} | {r['bytes'] / 2**20:.0f} MiB |")
    table = head + "\n".join(lines)
    return (f"### Measured: exact scan against ANN (`python -m bench scale -- --only ann`)\n\n"
            f"{args.users} users per size; one query at a time on one thread; builds on 2 threads. Load average "
            f"(1, 5, 15 min) when the run ended: {load()} on {os.cpu_count()} cores (shared with other work, so "
            f"latencies and build times are upper bounds). The exact scan's size is the vector table it reads "
            f"(which every row also keeps); an index's size is what faiss or hnswlib serialises (graph and its "
            f"own augmented copy of the vectors).\n\n{table}\n")


def cluster_section(args) -> str:
    from bench._scale_cluster import cluster_section as run

    return run(args)


def ray_section(args) -> str:
    from bench._scale_ray import ray_section as section

    return section(args)


def ray_train_section(args) -> str:
    from bench._scale_ray_train import ray_train_section as section

    return section(args)


SECTIONS = {"ann": ann_section, "cluster": cluster_section, "ray": ray_section, "ray_train": ray_train_section}


def section_name(name: str, args) -> str:
    if name == "ray":
        from bench._scale_ray import section_name as ray_name

        return ray_name(args)
    return f"scale-{name}"


def main(argv: list[str]) -> int:
    from bench._scale_ray import DEFAULT_ITEMS, DEFAULT_USERS

    parser = argparse.ArgumentParser(prog="python -m bench scale")
    parser.add_argument("--only", choices=sorted(SECTIONS), action="append", help="run just these sections")
    parser.add_argument("--sizes", type=int, nargs="+", default=[200_000, 1_000_000], help="catalogue sizes")
    parser.add_argument("--users", type=int, default=500, help="queries per size")
    parser.add_argument("--ef", type=int, nargs="+", default=[800, 1600, 3200], help="efSearch values to measure")
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds per load phase (cluster)")
    parser.add_argument("--ray-users", type=int, default=DEFAULT_USERS, help="ray: users published")
    parser.add_argument("--ray-items", type=int, default=DEFAULT_ITEMS, help="ray: products in the catalogue")
    parser.add_argument("--ray-runs", default="one,1,2",
                        help="ray: the runs, first the baseline: 'one' (one process) or Ray's worker count")
    parser.add_argument("--ray-tmp", default=None, help="ray: where the homes are built (default: the temp dir)")
    parser.add_argument("--train-size", choices=("100k", "1m"), default="1m", help="ray_train: MovieLens size")
    parser.add_argument("--train-epochs", type=int, default=10, help="ray_train: epochs at most, every run")
    parser.add_argument("--train-seed", type=int, default=0, help="ray_train: the split's and the model's seed")
    parser.add_argument("--no-docs", action="store_true", help="print only; leave docs/scaling.md as it is")
    args = parser.parse_args(argv)
    from bench._sections import write_section

    for name in args.only or sorted(SECTIONS):
        log(f"== scale: {name}")
        body = SECTIONS[name](args)
        log(body)
        if not args.no_docs:
            write_section(DOCS, section_name(name, args), body)
            log(f"wrote the {name} section of {DOCS.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
