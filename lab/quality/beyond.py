"""Beyond accuracy: vectorised top-k accuracy, coverage, popularity percentile, diversity, MMR.

Accuracy here is the vectorised twin of pocketrank.server.training.ranking_metrics' pure functions (the
tests hold them together; nDCG@k is that module's own ndcg_at_k, row by row): P@k, R@k, binary-gain nDCG@k and MAP as Microsoft
Recommenders defines it (precision at each hit in the top k, summed, over the
user's number of relevant items).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from pocketrank.server.training.ranking_metrics import ndcg_at_k


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Row-wise indices of the k largest scores, best first (ties: lower index first)."""
    part = np.argpartition(-scores, kth=min(k, scores.shape[1] - 1), axis=1)[:, : k + 1]
    rows = np.arange(scores.shape[0])[:, None]
    order = np.lexsort((part, -scores[rows, part]), axis=1)
    return part[rows, order][:, :k]


def accuracy(top: np.ndarray, relevant: sp.csr_matrix, k: int = 10) -> dict[str, float]:
    """Mean P@k, R@k, nDCG@k, MAP@k, HR@k over rows with at least one relevant item."""
    rel = relevant.tocsr()
    n_rel = np.diff(rel.indptr)
    keep = n_rel > 0
    top, rel, n_rel = top[keep, :k], rel[keep], n_rel[keep]
    hits = np.asarray(rel[np.arange(len(top))[:, None], top].todense()) > 0
    ndcg = [ndcg_at_k(t.tolist(), set(rel.indices[rel.indptr[r]:rel.indptr[r + 1]].tolist()), k)
            for r, t in enumerate(top)]
    cum_hits = np.cumsum(hits, axis=1)
    prec_at_hit = np.where(hits, cum_hits / np.arange(1, k + 1), 0.0)
    return {
        f"P@{k}": float(hits.sum(1).mean() / k),
        f"R@{k}": float((hits.sum(1) / n_rel).mean()),
        f"nDCG@{k}": float(np.mean(ndcg)) if len(ndcg) else float("nan"),
        f"MAP@{k}": float((prec_at_hit.sum(1) / n_rel).mean()),
        f"HR@{k}": float(hits.any(1).mean()),
        "users": int(keep.sum()),
    }


def coverage(top: np.ndarray, n_items: int) -> float:
    """Share of the catalogue that appears in at least one user's top k."""
    return float(len(np.unique(top)) / n_items)


def popularity_ranks(counts: np.ndarray) -> np.ndarray:
    """Each item's popularity rank scaled to [0, 1] (0 = least, 1 = most consumed; ties by index)."""
    return np.argsort(np.argsort(counts, kind="stable"), kind="stable") / max(len(counts) - 1, 1)


def popularity_percentile(top: np.ndarray, counts: np.ndarray) -> float:
    """Mean popularity percentile (0 = least, 100 = most popular) of recommended items."""
    return float(100.0 * popularity_ranks(counts)[top].mean())


def intra_list_diversity(top: np.ndarray, item_vecs: np.ndarray) -> float:
    """Mean pairwise cosine distance inside each list, averaged over lists."""
    v = item_vecs / np.maximum(np.linalg.norm(item_vecs, axis=1, keepdims=True), 1e-9)
    lists = v[top]  # (U, k, d)
    sims = np.einsum("ukd,ujd->ukj", lists, lists)
    k = top.shape[1]
    off = (sims.sum((1, 2)) - np.trace(sims, axis1=1, axis2=2)) / (k * (k - 1))
    return float((1.0 - off).mean())


def mmr(scores: np.ndarray, item_vecs: np.ndarray, k: int, lam: float, pool: int = 100,
        counts: np.ndarray | None = None, exposure: float = 0.0) -> np.ndarray:
    """Maximal marginal relevance re-rank of each row's top `pool` items.

    next = argmax  (1 - lam) * rel(i) - lam * max_{j chosen} cos(i, j) - exposure * pop(i)
    with rel min-max scaled per row and pop = log-count scaled to [0, 1].
    lam = 0 and exposure = 0 return the plain top k; larger values trade accuracy for
    diversity and coverage (the knob behind the trade-off curve).
    """
    cand = top_k(scores, pool)
    v = item_vecs / np.maximum(np.linalg.norm(item_vecs, axis=1, keepdims=True), 1e-9)
    pen = np.zeros(scores.shape[1])
    if counts is not None and exposure > 0:
        lc = np.log1p(counts)
        pen = exposure * (lc - lc.min()) / max(lc.max() - lc.min(), 1e-9)
    out = np.empty((scores.shape[0], k), dtype=np.int64)
    for u in range(scores.shape[0]):
        c = cand[u]
        rel = scores[u, c]
        rel = (rel - rel.min()) / max(rel.max() - rel.min(), 1e-9)
        base = (1 - lam) * rel - pen[c]
        sim = v[c] @ v[c].T
        max_sim = np.full(len(c), -np.inf if lam == 0 else 0.0)
        chosen = np.zeros(len(c), dtype=bool)
        for r in range(k):
            val = base - lam * np.maximum(max_sim, 0.0) if r else base.copy()
            val[chosen] = -np.inf
            j = int(np.argmax(val))
            chosen[j] = True
            out[u, r] = c[j]
            max_sim = np.maximum(max_sim, sim[j])
    return out
