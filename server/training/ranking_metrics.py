"""Ranking metrics as pure functions over id lists (tested against hand-computed values)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def hit_rate_at_k(ranked: Sequence[int], relevant: set[int], k: int) -> float:
    return 1.0 if any(i in relevant for i in ranked[:k]) else 0.0


def precision_at_k(ranked: Sequence[int], relevant: set[int], k: int) -> float:
    return sum(1 for i in ranked[:k] if i in relevant) / k


def recall_at_k(ranked: Sequence[int], relevant: set[int], k: int) -> float:
    if not relevant:
        return 0.0
    return sum(1 for i in ranked[:k] if i in relevant) / len(relevant)


def ndcg_at_k(ranked: Sequence[int], relevant: set[int], k: int) -> float:
    """Binary-gain nDCG: log2 discount, ideal = all relevant items first."""
    if not relevant:
        return 0.0
    dcg = sum(1.0 / math.log2(r + 2) for r, i in enumerate(ranked[:k]) if i in relevant)
    idcg = sum(1.0 / math.log2(r + 2) for r in range(min(len(relevant), k)))
    return dcg / idcg


def average_precision(ranked: Sequence[int], relevant: set[int]) -> float:
    """Hits' precision summed over the ranking, divided by the user's relevant count."""
    if not relevant:
        return 0.0
    hits, total = 0, 0.0
    for r, i in enumerate(ranked):
        if i in relevant:
            hits += 1
            total += hits / (r + 1)
    return total / len(relevant)


def top10_overlap(a: Sequence[int], b: Sequence[int], k: int = 10) -> float:
    return len(set(a[:k]) & set(b[:k])) / k
