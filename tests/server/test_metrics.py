import math

import pytest

from server.training import ranking_metrics as metrics


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
