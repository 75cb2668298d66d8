"""How far two scorings of the same candidates agree: pure functions over score arrays.

The parity gates judge the int8 ranker by these against fp32 on held-out
users; the benchmark prints the same numbers for every quantization candidate.
"""

from __future__ import annotations

import numpy as np

from pocketrank.server.training import ranking_metrics


def order(scores: np.ndarray) -> np.ndarray:
    """Candidate positions best first; ties keep input order, as the device's ranking does."""
    return np.argsort(-np.asarray(scores), kind="stable")


def top_k_overlap(a: np.ndarray, b: np.ndarray, k: int = 10) -> float:
    """Share of a's top k that is also in b's top k."""
    k = min(k, len(a))
    return len(set(order(a)[:k].tolist()) & set(order(b)[:k].tolist())) / k if k else 1.0


def kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau-b between two scorings of the same items (ties counted as neither).

    O(n^2) over pairs, which at a few hundred candidates is a fraction of a
    millisecond and needs no scipy on the exporter's path.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 2:
        return 1.0
    upper = np.triu_indices(len(a), k=1)
    da = np.sign(a[:, None] - a[None, :])[upper]
    db = np.sign(b[:, None] - b[None, :])[upper]
    denom = np.sqrt(np.count_nonzero(da) * np.count_nonzero(db))
    return float((da * db).sum() / denom) if denom else 1.0


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Probability that a random positive outscores a random negative (ties count half).

    NaN when the labels hold only one class.
    """
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=bool)
    pos, neg = scores[labels], scores[~labels]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size)


def ndcg_at_k(scores: np.ndarray, labels: np.ndarray, k: int = 10) -> float:
    """Binary-gain nDCG@k of the candidates ranked by `scores` (0 without positives):
    pocketrank.server.training.ranking_metrics.ndcg_at_k over candidate positions."""
    positives = set(np.flatnonzero(np.asarray(labels, dtype=bool)).tolist())
    return ranking_metrics.ndcg_at_k(order(scores)[:k].tolist(), positives, k)
