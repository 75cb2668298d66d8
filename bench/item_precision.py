"""`python -m bench item_precision`: which precision item vectors travel in (PRI1 entries, wire 4).

The device reranks its candidates with the int8 ranker over the item vectors it
holds. Sending those vectors as f16, or int8 with a per-vector f32 scale,
instead of f32 shrinks each item entry; this measures what that costs in the
on-device rerank, judged like the exporter's int8 parity gates
(exporter/parity.py INT8_GATES: mean top-10 overlap >= 0.95, mean Kendall tau
>= 0.98) against the same ranker fed f32 vectors.

Users: `--users` simulated users, each the decayed fold (pocketrank.shared.features) of 5-40
items drawn by popularity (Zipf over the catalogue order); candidates: the 200
items nearest the user vector (dot product), as retrieval gives them. The user
vector is folded from the vectors at the precision under test too, since the
device folds its live state from the vectors it holds.

Data: the current model of a server home (`--home DIR`, default
$POCKETRANK_HOME, else ./var): its item vectors and int8 ranker; without one, a
2-epoch MovieLens model is trained into a scratch home (nothing of yours changes).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from pocketrank.exporter import agreement
from pocketrank.exporter.parity import INT8_GATES
from pocketrank.shared import wire
from pocketrank.shared.features import fold_events, user_vector

PRECISIONS = ("f32", "f16", "i8")


def _source(arg: str | None, tmp: Path) -> tuple[np.ndarray, np.ndarray, bytes, str]:
    """(item ids, f32 vectors, int8 ranker bytes, where from): the home's current model, else a scratch one."""
    from pocketrank.server.home import Home

    root = Path(arg or os.environ.get("POCKETRANK_HOME", "var"))
    label = str(root)
    try:
        if not (root / "models").is_dir():  # not a home: nothing is created there
            raise FileNotFoundError(root / "models")
        home = Home(root)
        version = home.current_model()
    except Exception:  # no trained model there: a small one, as the test suite trains
        from pocketrank.server.data.datasets import import_movielens
        from pocketrank.server.jobs.train import export_job, train_job

        home = Home(tmp / "home")
        import_movielens(home.store(), "100k", progress=False)
        version = train_job(home, epochs=2, kind="fold", progress=False)["model_version"]
        export_job(home, n_users=100)  # the int8 ranker read below
        label = "a 2-epoch MovieLens model trained for this run"
    ids, vectors = home.store().item_vectors()
    return ids, vectors, (home.model_dir(version) / "ranker.int8.onnx").read_bytes(), f"{version} ({label})"


def _roundtrip(vectors: np.ndarray, precision: str) -> np.ndarray:
    dim = vectors.shape[1]
    return np.stack([wire.dequantize_vector(wire.quantize_vector(v, precision), precision, dim) for v in vectors])


def measure(ids: np.ndarray, vectors: np.ndarray, ranker, n_users: int = 300, n_cand: int = 200,
            seed: int = 0) -> dict[str, dict]:
    rng = np.random.default_rng(seed)
    n = len(ids)
    cdf = np.cumsum(1.0 / np.arange(1, n + 1) ** 1.1)
    cdf /= cdf[-1]
    held = {p: _roundtrip(vectors, p) for p in PRECISIONS}
    histories = [np.searchsorted(cdf, rng.random(int(rng.integers(5, 41)))) for _ in range(n_users)]
    out = {}
    ref_scores = []
    for p in PRECISIONS:
        vec = held[p]
        overlap, tau, diff, cand_sets = [], [], [], []
        for u, hist in enumerate(histories):
            state = fold_events((("view", vec[i]) for i in hist), vec.shape[1])
            uv = user_vector(state)
            if p == "f32":
                cand = np.argsort(-(vectors @ uv), kind="stable")[:n_cand]
                cand_sets.append(cand)
                scores = ranker.score(uv, vec[cand])
                ref_scores.append((cand, scores))
                continue
            cand, ref = ref_scores[u]
            scores = ranker.score(uv, vec[cand])
            overlap.append(agreement.top_k_overlap(ref, scores, 10))
            tau.append(agreement.kendall_tau(ref, scores))
            diff.append(float(np.max(np.abs(ref - scores))))
        entry = wire.pack_item_entry(int(ids[0]), vectors[0], "A film title (1995)", "Drama", 9.99, True, p)
        out[p] = {
            "entry_bytes": len(entry),
            "vector_bytes": len(wire.quantize_vector(vectors[0], p)),
            "mean_top10_overlap": float(np.mean(overlap)) if overlap else 1.0,
            "min_top10_overlap": float(np.min(overlap)) if overlap else 1.0,
            "mean_kendall_tau": float(np.mean(tau)) if tau else 1.0,
            "min_kendall_tau": float(np.min(tau)) if tau else 1.0,
            "max_abs_diff": float(np.max(diff)) if diff else 0.0,
        }
    return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.item_precision", description=__doc__.split("\n")[0])
    p.add_argument("--home", help="server home with a trained model (default $POCKETRANK_HOME or ./var)")
    p.add_argument("--users", type=int, default=300)
    args = p.parse_args(argv)
    from pocketrank.edge_runtime.rerank import LocalRanker

    with tempfile.TemporaryDirectory() as tmp:
        ids, vectors, blob, source = _source(args.home, Path(tmp))
        ranker = LocalRanker(blob)
    res = measure(ids, vectors, ranker, n_users=args.users)
    gate_overlap = INT8_GATES["int8_mean_top10_overlap"][0]
    gate_tau = INT8_GATES["int8_mean_kendall_tau"][0]
    print(f"item vector precision: {len(ids)} items x {vectors.shape[1]} dims from {source}; {args.users} users, "
          f"200 candidates, int8 ranker fed f32 vectors as the reference")
    print(f"{'precision':<10}{'vector B':>9}{'entry B':>9}{'top10 mean/min':>17}{'tau mean/min':>17}"
          f"{'max |d score|':>15}  gates (>= {gate_overlap} / >= {gate_tau})")
    failed = 0
    for prec, r in res.items():
        ok = r["mean_top10_overlap"] >= gate_overlap and r["mean_kendall_tau"] >= gate_tau
        failed += not ok
        print(f"{prec:<10}{r['vector_bytes']:>9}{r['entry_bytes']:>9}"
              f"{r['mean_top10_overlap']:>9.4f}/{r['min_top10_overlap']:.3f}"
              f"{r['mean_kendall_tau']:>9.4f}/{r['min_kendall_tau']:.3f}{r['max_abs_diff']:>15.2e}  "
              f"{'pass' if ok else 'FAIL'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
