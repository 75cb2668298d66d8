import math

import pytest

from pocketrank.server.training import ranking_metrics as metrics


def test_hand_computed_values():
    ranked, rel = [3, 1, 7, 2], {1, 2, 9}
    assert metrics.hit_rate_at_k(ranked, rel, 1) == 0.0
    assert metrics.hit_rate_at_k(ranked, rel, 2) == 1.0
    assert metrics.precision_at_k(ranked, rel, 4) == 0.5
    assert metrics.recall_at_k(ranked, rel, 4) == pytest.approx(2 / 3)
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert metrics.ndcg_at_k(ranked, rel, 4) == pytest.approx(dcg / idcg)
    # hits at ranks 2 and 4: (1/2 + 2/4) / 3 relevant
    assert metrics.average_precision(ranked, rel) == pytest.approx(1 / 3)


def test_edge_cases():
    assert metrics.ndcg_at_k([1], set(), 10) == 0.0
    assert metrics.ndcg_at_k([1, 2], {1}, 10) == 1.0
    assert metrics.top10_overlap(list(range(10)), list(range(5, 15))) == 0.5


def test_ndcg_by_hand_with_figures():
    # ranked [5, 1, 7, 3], relevant {1, 3, 9}, k 4: hits at ranks 2 and 4 (1-based), discount 1/log2(rank + 1)
    # DCG = 1/log2(3) + 1/log2(5) = 0.630930 + 0.430677 = 1.061606
    # IDCG (three relevant, all first) = 1 + 0.630930 + 0.5 = 2.130930
    assert metrics.ndcg_at_k([5, 1, 7, 3], {1, 3, 9}, 4) == pytest.approx(0.498189, abs=1e-6)
    assert metrics.ndcg_at_k([5, 1, 7, 3], {1, 3, 9}, 1) == 0.0  # the top 1 misses
    assert metrics.ndcg_at_k([4, 8, 2], {2}, 10) == pytest.approx(0.5)  # one relevant at rank 3: 1/log2(4)


def test_every_ndcg_in_the_project_is_this_one():
    """The exporter's parity gate, lab's vectorised accuracy and its next-item protocols give the same figures."""
    import numpy as np
    import scipy.sparse as sp

    from lab.quality import beyond, protocols
    from pocketrank.exporter import agreement

    rng = np.random.default_rng(3)
    scores = rng.normal(size=(40, 30))
    top = beyond.top_k(scores, 10)
    rel = sp.csr_matrix((rng.random((40, 30)) < 0.15).astype(np.float32))
    rows = [r for r in range(40) if rel[r].nnz]
    by_row = [metrics.ndcg_at_k(top[r].tolist(), set(rel[r].indices.tolist()), 10) for r in rows]
    assert beyond.accuracy(top, rel, 10)["nDCG@10"] == pytest.approx(np.mean(by_row), abs=1e-12)
    for r in rows:
        labels = rel[r].toarray().ravel() > 0
        assert agreement.ndcg_at_k(scores[r], labels, 10) == pytest.approx(
            metrics.ndcg_at_k(agreement.order(scores[r])[:10].tolist(), set(np.flatnonzero(labels).tolist()), 10))
    target = rng.integers(0, 30, size=40)
    want = np.mean([metrics.ndcg_at_k(top[r].tolist(), {int(target[r])}, 10) for r in range(40)])
    assert protocols._next_item_metrics(scores, target, 10)["nDCG@10"] == pytest.approx(want, abs=1e-12)
    assert protocols._ndcg1(np.array([4, 8, 2]), 2) == pytest.approx(0.5)
