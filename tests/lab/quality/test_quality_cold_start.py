"""Cold start's models on tiny synthetic data: the demographic ridge and the ranking content map."""

import numpy as np
import pytest
import scipy.sparse as sp

from lab.quality.content_rank import RankingContentMap, blend_vectors, content_profile
from lab.quality.demographic import DemographicRidge, zip_region
from pocketrank.shared.errors import DataError


def _planted_profiles(n=60, seed=0):
    """Women like items 0-2, men items 3-5; age band adds item 6 for the young; item 7 is liked by all."""
    rng = np.random.default_rng(seed)
    profiles, rows = [], []
    for _ in range(n):
        p = {"gender": rng.choice(["F", "M"]), "age_band": rng.choice(["18-24", "45-54"])}
        liked = {7} | ({0, 1, 2} if p["gender"] == "F" else {3, 4, 5}) | ({6} if p["age_band"] == "18-24" else set())
        row = np.zeros(8, np.float32)
        row[list(liked)] = 1.0
        profiles.append(p)
        rows.append(row)
    return profiles, sp.csr_matrix(np.array(rows))


def test_demographic_ridge_ranks_each_segments_items_first():
    profiles, X = _planted_profiles()
    m = DemographicRidge(lam=1.0, fields=("gender", "age_band")).fit(profiles, X)
    s = m.scores([{"gender": "F", "age_band": "18-24"}, {"gender": "M", "age_band": "45-54"}])
    assert set(np.argsort(-s[0])[:5]) == {0, 1, 2, 6, 7}
    assert set(np.argsort(-s[1])[:4]) == {3, 4, 5, 7}
    assert s[1, 6] < s[0, 6]


def test_demographic_ridge_unknown_profile_gets_popularity():
    profiles, X = _planted_profiles()
    m = DemographicRidge(lam=5.0, fields=("gender", "age_band")).fit(profiles, X)
    s = m.scores([{"gender": "unseen"}, {}])
    np.testing.assert_allclose(s[0], s[1])
    # with no field set, only the (unpenalised) intercept answers: the mean row when fields are balanced
    assert np.argmax(s[0]) == 7


def test_demographic_ridge_crosses_capture_an_interaction():
    # item 0 is liked only by young women, item 1 only by old men: main effects alone cannot separate them fully
    profiles = [{"g": g, "a": a} for g in "FM" for a in "yo" for _ in range(10)]
    X = np.zeros((len(profiles), 3), np.float32)
    for r, p in enumerate(profiles):
        X[r, 2] = 1.0
        X[r, 0] = float(p["g"] == "F" and p["a"] == "y")
        X[r, 1] = float(p["g"] == "M" and p["a"] == "o")
    X = sp.csr_matrix(X)
    flat = DemographicRidge(lam=0.01, fields=("g", "a")).fit(profiles, X)
    cross = DemographicRidge(lam=0.01, fields=("g", "a"), crosses=True).fit(profiles, X)
    q = [{"g": "F", "a": "o"}]  # liked neither 0 nor 1
    assert abs(cross.scores(q)[0, 0]) < 0.05 and abs(cross.scores(q)[0, 1]) < 0.05
    assert flat.scores(q)[0, 0] > 0.2 or flat.scores(q)[0, 1] > 0.2  # main effects leak into the corner


def test_demographic_ridge_rejects_bad_input():
    profiles, X = _planted_profiles()
    with pytest.raises(DataError):
        DemographicRidge(lam=0)
    with pytest.raises(DataError, match="profiles"):
        DemographicRidge().fit(profiles[:-1], X)


def test_zip_region():
    assert zip_region("94043") == "9"
    assert zip_region("T8H1N") == "x"
    assert zip_region("") == "x"


def _kron_solution(U, Y, F, lam):
    """The same least squares solved the slow way: vec(W) against the Kronecker design."""
    Z = np.hstack([U, np.ones((len(U), 1))])
    Fb = np.hstack([F, np.ones((len(F), 1))])
    A = np.kron(Z, Fb)  # row (u, i) -> coefficients of W[a, j] = Z[u, a] * Fb[i, j]
    w = np.linalg.solve(A.T @ A + lam * np.eye(A.shape[1]), A.T @ Y.ravel())
    return w.reshape(Z.shape[1], Fb.shape[1])


def test_ranking_content_map_matches_the_kronecker_least_squares():
    rng = np.random.default_rng(1)
    U, F = rng.normal(size=(12, 3)), rng.normal(size=(9, 4))
    Y = (rng.random((12, 9)) < 0.4).astype(np.float64)
    m = RankingContentMap(lam=0.7).fit(U, Y, F, row_norm=False)
    np.testing.assert_allclose(m.W, _kron_solution(U, Y, F, 0.7), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(m.scores(U, F), U @ m.item_vectors(F).T + m.bias(F), rtol=1e-5, atol=1e-5)


def test_ranking_content_map_ranks_unseen_items_by_their_content():
    rng = np.random.default_rng(2)
    U = rng.normal(size=(200, 4)).astype(np.float32)
    W_true = rng.normal(size=(4, 6))
    F = rng.normal(size=(60, 6)).astype(np.float32)
    Y = (U @ W_true @ F.T > 1.0).astype(np.float32)
    warm, new = np.arange(40), np.arange(40, 60)
    m = RankingContentMap(lam=1.0).fit(U, sp.csr_matrix(Y[:, warm]), F[warm])
    s = m.scores(U, F[new])
    truth = U @ W_true @ F[new].T
    corr = np.mean([np.corrcoef(s[u], truth[u])[0, 1] for u in range(len(U))])
    assert corr > 0.8


def test_ranking_content_map_rejects_bad_shapes():
    with pytest.raises(DataError, match="expected"):
        RankingContentMap().fit(np.zeros((3, 2)), np.zeros((3, 4)), np.zeros((5, 2)))
    with pytest.raises(DataError, match="interaction"):
        RankingContentMap().fit(np.zeros((3, 2)), np.zeros((3, 4)), np.zeros((4, 2)))


def test_content_profile_is_the_mean_of_normalised_recent_content():
    F = np.array([[3.0, 4.0], [0.0, 2.0], [1.0, 0.0]], np.float32)
    P = content_profile(F, [np.array([0, 1, 2]), np.array([], np.int64)], length=2)
    np.testing.assert_allclose(P[0], [0.5, 0.5])  # the last two items: (0, 1) and (1, 0)
    np.testing.assert_allclose(P[1], [0.0, 0.0])


def test_blend_vectors_scales_the_other_map_to_the_base_spread_on_fit_rows():
    rng = np.random.default_rng(3)
    U = rng.normal(size=(30, 4)).astype(np.float32)
    base = rng.normal(size=(10, 4)).astype(np.float32)
    other = 100 * base  # same direction, 100 times the scale: c must undo it
    out = blend_vectors(U, base, other, 1.0, fit_rows=np.arange(5))
    np.testing.assert_allclose(out, 2 * base, rtol=1e-4)
    assert blend_vectors(U, base, other, 0.0) is base


def test_content_features_title_weight_scales_only_title_tokens():
    from lab.quality.hybrid import content_features

    text = {"1": (["Drama"], 1995, "Star Wars"), "2": (["Comedy"], 1977, "Star Trek"), "3": (["Drama"], None, "Trek")}
    ids = np.array(["1", "2", "3"])
    a, b = content_features(text, ids), content_features(text, ids, title_weight=0.1)
    differ = np.flatnonzero((a != b).any(0))
    assert len(differ) == 2  # the tokens seen twice ("star", "trek"); genres and years untouched
    np.testing.assert_allclose(b[:, differ], a[:, differ] / 5)
