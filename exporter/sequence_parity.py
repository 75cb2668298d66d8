"""Parity gates of a sequence model: torch (training) vs fp32 ONNX (the server) vs int8 ONNX (the device).

Judged on real users: each gate user's history before their last product,
fed to the graphs through pocketrank.shared.sequence.encoder_feed (the function both
the server and the device build their feed with) and to torch through
training's own padding. Each user vector ranks the whole catalogue (the
history left out); the gates compare the top 10s and the nDCG@10 of the
product the user chose next. A failed gate raises ModelError: a device that
would rank differently from the server is never published.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from pocketrank.server.training.ranking_metrics import ndcg_at_k
from pocketrank.shared.errors import ModelError
from pocketrank.shared.schemas import EVENT_TYPES
from pocketrank.shared.sequence import encoder_feed

from . import agreement
from .parity import session

FP32_ATOL = 1e-4
GATES: dict[str, tuple[float, str]] = {
    "int8_mean_top10_overlap": (0.90, "min"),
    "int8_ndcg10_kept": (0.98, "min"),  # the device keeps at least 98% of the server's nDCG@10
}


def check_sequence_parity(torch_vectors: Callable[[list[int]], np.ndarray], item_vectors: np.ndarray,
                          fp32_path, int8_path, histories: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
                          targets: np.ndarray, max_len: int, n_users: int | None = 600, seed: int = 0) -> dict:
    """`histories[u]` = (model rows, type codes, times) before user u's `targets[u]` (-1: not judged);
    `torch_vectors(users)` gives training's user vectors for the same histories."""
    users = [u for u in np.random.default_rng(seed).permutation(len(histories))
             if targets[u] >= 0 and len(histories[u][0])]
    users = users[:n_users] if n_users else users
    if not users:
        raise ModelError("no user to judge the encoder's parity on (every history is shorter than three products)")
    dim = item_vectors.shape[1]
    ref = torch_vectors(users)
    fp32_s, int8_s = session(fp32_path), session(int8_path)
    worst, overlap = 0.0, []
    ndcg: dict[str, list[float]] = {"torch": [], "fp32": [], "int8": []}
    for k, u in enumerate(users):
        rows, codes, times = histories[u]
        events = [(EVENT_TYPES[int(c)], int(r), float(t)) for r, c, t in zip(rows, codes, times)]
        feed = encoder_feed(events, [item_vectors[int(r)] for r in rows], max_len, dim)
        assert feed is not None
        a, b = fp32_s.run(None, feed)[0][0], int8_s.run(None, feed)[0][0]
        worst = max(worst, float(np.max(np.abs(a - ref[k]))))
        scores = {}
        for name, uv in (("torch", ref[k]), ("fp32", a), ("int8", b)):
            s = item_vectors @ uv
            s[rows] = -np.inf
            scores[name] = s
            ndcg[name].append(ndcg_at_k(agreement.order(s)[:10].tolist(), {int(targets[u])}, 10))
        overlap.append(agreement.top_k_overlap(scores["fp32"], scores["int8"], 10))
    mean = {name: float(np.mean(v)) for name, v in ndcg.items()}
    report: dict = {"users": len(users), "fp32_max_abs_diff_vs_torch": worst,
              "ndcg10_torch": mean["torch"], "ndcg10_fp32": mean["fp32"], "ndcg10_int8": mean["int8"],
              "int8_mean_top10_overlap": float(np.mean(overlap)), "int8_min_top10_overlap": float(np.min(overlap)),
              "int8_ndcg10_kept": mean["int8"] / mean["fp32"] if mean["fp32"] > 0 else 1.0}
    gates = {"fp32_max_abs_diff_vs_torch": {"value": worst, "limit": FP32_ATOL, "must_be": "at most",
                                            "passed": worst <= FP32_ATOL}}
    for name, (limit, kind) in GATES.items():
        v = report[name]
        gates[name] = {"value": v, "limit": limit, "must_be": "at least" if kind == "min" else "at most",
                       "passed": bool(v >= limit if kind == "min" else v <= limit)}
    report["gates"] = gates
    failed = [n for n, g in gates.items() if not g["passed"]]
    if failed:
        raise ModelError("encoder parity gate failed, not publishing: " + "; ".join(
            f"{n} {gates[n]['value']:.4g} (must be {gates[n]['must_be']} {gates[n]['limit']})" for n in failed))
    return report
