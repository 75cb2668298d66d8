"""The agreement measures behind the int8 gates, against values worked out by hand."""

import math

import numpy as np
import pytest

from pocketrank.exporter import agreement


def test_top_k_overlap_counts_shared_items_of_the_two_top_k():
    a = np.array([9, 8, 7, 6, 5, 4.0])
    b = np.array([9, 8, 1, 6, 5, 7.0])  # top 3 of a: {0, 1, 2}; of b: {0, 1, 5}
    assert agreement.top_k_overlap(a, b, 3) == pytest.approx(2 / 3)
    assert agreement.top_k_overlap(a, a, 10) == 1.0  # k above n: all of them


def test_kendall_tau_by_hand():
    assert agreement.kendall_tau([1, 2, 3, 4], [1, 2, 3, 4]) == 1.0
    assert agreement.kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    # one swapped neighbour pair of 4 items: 5 concordant, 1 discordant of 6
    assert agreement.kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    # tie in b: pairs (0,1) tied in b only; tau-b = (C - D) / sqrt(6 * 5) with C = 5, D = 0
    assert agreement.kendall_tau([1, 2, 3, 4], [1, 1, 3, 4]) == pytest.approx(5 / math.sqrt(30))


def test_kendall_tau_matches_scipy_on_random_scores():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    a = rng.normal(size=200)
    b = a + rng.normal(scale=0.3, size=200)
    b[:20] = np.round(b[:20], 1)  # some ties
    assert agreement.kendall_tau(a, b) == pytest.approx(stats.kendalltau(a, b).statistic, abs=1e-12)


def test_auc_by_hand():
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    assert agreement.auc(scores, np.array([1, 0, 0, 0])) == 1.0
    assert agreement.auc(scores, np.array([0, 0, 0, 1])) == 0.0
    assert agreement.auc(scores, np.array([0, 1, 0, 0])) == pytest.approx(2 / 3)
    assert agreement.auc(np.array([0.5, 0.5]), np.array([1, 0])) == 0.5  # a tie counts half
    assert math.isnan(agreement.auc(scores, np.zeros(4)))


def test_ndcg_by_hand():
    scores = np.array([0.1, 0.9, 0.5, 0.3])  # order: 1, 2, 3, 0
    assert agreement.ndcg_at_k(scores, np.array([0, 1, 0, 0]), 10) == 1.0
    assert agreement.ndcg_at_k(scores, np.array([0, 0, 1, 0]), 10) == pytest.approx(1 / math.log2(3))
    assert agreement.ndcg_at_k(scores, np.array([1, 0, 0, 0]), 3) == 0.0  # rank 4 is outside the top 3
    two = agreement.ndcg_at_k(scores, np.array([1, 1, 0, 0]), 10)
    assert two == pytest.approx((1 + 1 / math.log2(5)) / (1 + 1 / math.log2(3)))
    assert agreement.ndcg_at_k(scores, np.zeros(4), 10) == 0.0
