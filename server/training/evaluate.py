"""Temporal leave-last-out evaluation with full ranking (no sampled negatives)."""

from __future__ import annotations

import numpy as np
import torch

from . import ranking_metrics as metrics
from .model import Recommender
from .sequences import Split, pooled_history


def pooled_user(item_vecs: np.ndarray, history: np.ndarray, length: int) -> np.ndarray:
    idx, w = pooled_history(history, length)
    keep = idx > 0
    if not keep.any():
        return np.zeros(item_vecs.shape[1], dtype=np.float32)
    return (item_vecs[idx[keep] - 1] * w[keep, None]).sum(0) / w[keep].sum()


def retrieve_and_rank(model: Recommender, vecs: np.ndarray, uv: np.ndarray, exclude: np.ndarray,
                      n_candidates: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-n item indices by inner product (history excluded), then the same reranked by the click model."""
    s = vecs @ uv
    s[exclude] = -np.inf
    top = np.argsort(-s, kind="stable")[:n_candidates]
    top = top[np.isfinite(s[top])]  # a catalogue of n_candidates or fewer would bring the history back last
    with torch.no_grad():
        p = model.click(torch.from_numpy(uv[None]), torch.from_numpy(vecs[top])).numpy()
    return top, top[np.argsort(-p, kind="stable")]


def evaluate_last_item(model: Recommender, split: Split, which: str = "test", k: int = 10,
                   n_candidates: int = 200) -> dict[str, dict[str, float]]:
    """HR@k and nDCG@k of retrieval alone, retrieval + click model, and popularity.

    For `val` the history is the training part; for `test` it also holds the
    validation item. The user's history is excluded from the ranking.
    """
    vecs = model.item_vectors().detach().numpy()
    target = split.val if which == "val" else split.test
    pop = np.bincount(np.concatenate(split.train), minlength=vecs.shape[0]).astype(np.float64)
    out: dict[str, list[tuple[float, float]]] = {"retrieval": [], "ranker": [], "popular": []}
    for u, t in enumerate(target):
        if t < 0:
            continue
        hist = split.train[u] if which == "val" else np.append(split.train[u], split.val[u])
        uv = pooled_user(vecs, hist, model.config.history)
        top, reranked = retrieve_and_rank(model, vecs, uv, hist, n_candidates)
        ps = pop.copy()
        ps[hist] = -1
        lists = {"retrieval": top, "ranker": reranked, "popular": np.argsort(-ps, kind="stable")[:k]}
        rel = {int(t)}
        for name, lst in lists.items():
            ranked = lst[:k].tolist()
            out[name].append((metrics.hit_rate_at_k(ranked, rel, k), metrics.ndcg_at_k(ranked, rel, k)))
    return {
        name: {f"HR@{k}": float(np.mean(v, 0)[0]), f"nDCG@{k}": float(np.mean(v, 0)[1]), "users": len(v)}
        for name, v in out.items()
    }
