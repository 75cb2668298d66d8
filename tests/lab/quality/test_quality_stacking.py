"""Protocol 1's two-stage model: candidate features, the learned ranker, stacking on carves only."""

from __future__ import annotations

import numpy as np
import pytest

from lab.quality import stacking as st
from lab.quality.peers import binary_matrix

P1 = {"lam": 5.0, "p": 0.5, "w_user": 0.3, "user_lam": 5.0}
ALS = {"factors": 4, "regularization": 0.1, "alpha": 1.0, "iterations": 3}


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny nets: thread start-up would dominate (seconds on a shared 2-core box)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _rows(n_users=30, n_items=40, per_user=12, seed=0):
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(n_users), per_user)
    items = np.concatenate([rng.choice(n_items, per_user, replace=False) for _ in range(n_users)])
    ts = 1e9 + rng.random(len(users)) * 86400 * 30
    return users, items, ts


def _side(n_items=40):
    text = {str(i): ([["A", "B", "C"][i % 3]], 1980 + i % 20, f"t{i}") for i in range(n_items)}
    return st.item_side(text, np.array([str(i) for i in range(n_items)]))


def test_ranker_learns_the_feature_that_decides_the_label():
    rng = np.random.default_rng(0)
    F = rng.normal(size=(80, 20, 4)).astype(np.float32)
    y = (F[..., 2] > 0.8).astype(np.float32)  # only feature 2 matters
    for loss in ("bce", "listwise"):
        r = st.Ranker(st.RankerConfig(hidden=16, epochs=15, batch_users=8, lr=1e-2, loss=loss, seed=1)).fit(F, y)
        Ft = rng.normal(size=(40, 20, 4)).astype(np.float32)
        s = r.score(Ft)
        assert s.shape == (40, 20)
        pos, neg = s[Ft[..., 2] > 0.8], s[Ft[..., 2] <= 0.8]
        auc = (pos[:, None] > neg[None, :]).mean()
        assert auc > 0.97, (loss, auc)
    with pytest.raises(ValueError, match="features must be"):
        st.Ranker().fit(F, y[:, :5])
    with pytest.raises(ValueError, match="unknown ranker loss"):
        st.Ranker(st.RankerConfig(loss="hinge", epochs=1)).fit(F, y)


def test_candidate_features_hand_values():
    # 2 users x 4 items; user 0 had items 0 (genre A, 1990) and 1 (genre B, 2000)
    X = binary_matrix(np.array([0, 0, 1]), np.array([0, 1, 1]), 2, 4)
    G = np.array([[1, 0], [0, 1], [1, 0], [1, 1]], np.float32)
    years = np.array([1990, 2000, 1995, 1980], np.float32)
    cand = np.array([[2, 3], [0, 2]])
    z = {n: np.tile(np.arange(4, dtype=np.float32) * (k + 1), (2, 1))
         for k, n in enumerate(("z_dlae", "z_user_ease", "z_ease", "z_als", "z_rp3"))}
    F = st.candidate_features(X, np.array([0, 1]), cand, z, G, years)
    assert F.shape == (2, 2, len(st.FEATURES))
    f = {n: F[..., k] for k, n in enumerate(st.FEATURES)}
    assert f["z_als"][0].tolist() == [8.0, 12.0]  # z row 0 at items 2, 3 (times 4)
    assert f["genre_overlap"][0].tolist() == pytest.approx([0.5, 0.5])  # A is half the history; {A,B}: (.5+.5)/2
    assert f["genre_overlap"][1].tolist() == pytest.approx([0.0, 0.0])  # user 1 only had B
    assert f["year_gap"][0].tolist() == pytest.approx([0.0, 1.5])  # mean history year 1995
    assert f["log_rank"][0, 0] == 0.0 and f["log_rank"][0, 1] > 0
    assert np.all(f["local_pop"] == 0)  # no TimeIndex given


def test_time_index_counts_consumptions_in_the_users_window():
    day = 86400.0
    users = np.array([0, 0, 1, 1, 1])
    items = np.array([0, 1, 0, 1, 1])
    ts = np.array([0, 1, 30, 31, 100]) * day
    t = st.TimeIndex(users, items, ts, 2, 2, pad_days=2)
    got = t.counts_in_window(np.array([0, 1]), np.array([[0, 1], [1, 0]]))
    # user 0 active days 0-1 (+-2): item 0 once, item 1 once; user 1 days 30-100: item 1 twice, item 0 once
    assert got.tolist() == [[1, 1], [2, 1]]


def test_stacking_labels_come_from_the_carves_held_part_only():
    users, items, ts = _rows()
    G, years = _side()
    part = st.carve(users, items, seed=7)
    base = st.BaseModels(P1, 5.0, ALS, seed=0, n_candidates=10)
    F, y, cand, Yh = st.examples(users, items, ts, part, 30, 40, base, G, years)
    assert F.shape == (30, 10, len(st.FEATURES)) and y.shape == cand.shape == (30, 10)
    seen = {(u, i) for u, i in zip(users[part], items[part])}
    held = {(u, i) for u, i in zip(users[~part], items[~part])}
    for u in range(30):
        for i, label in zip(cand[u], y[u]):
            assert (u, i) not in seen  # candidates exclude what the base models were fitted on
            assert bool(label) == ((u, i) in held)
    assert y.sum() > 0


def test_two_stage_fits_on_training_rows_and_never_recommends_them():
    users, items, ts = _rows()
    G, years = _side()
    rng = np.random.default_rng(3)
    train = rng.random(len(users)) < 0.8
    m = st.TwoStage(st.BaseModels(P1, 5.0, ALS, n_candidates=10), st.RankerConfig(hidden=8, epochs=2), G, years)
    m.fit(users[train], items[train], ts[train], 30, 40)
    top = m.recommend(np.arange(30), k=5)
    assert top.shape == (30, 5)
    seen = set(zip(users[train], items[train]))
    assert not any((u, i) in seen for u in range(30) for i in top[u])
    assert all(len(set(row)) == 5 for row in top)



def test_a_user_without_training_rows_gets_finite_features_and_a_finite_ranker():
    # user 2 has no rows: an empty active window must count 0 (not a negative count -> log1p NaN)
    users, items = np.array([0, 0, 1, 1]), np.array([0, 1, 1, 2])
    ts = np.array([0.0, 1.0, 2.0, 3.0]) * 86400
    t = st.TimeIndex(users, items, ts, 3, 3, pad_days=1)
    assert t.counts_in_window(np.array([2]), np.array([[0, 1, 2]])).tolist() == [[0, 0, 0]]
    X = binary_matrix(users, items, 3, 3)
    G = np.eye(3, dtype=np.float32)
    z = {n: np.zeros((3, 3), np.float32) for n in ("z_dlae", "z_user_ease", "z_ease", "z_als", "z_rp3")}
    cand = np.array([[2, 0], [0, 2], [0, 1]])
    F = st.candidate_features(X, np.arange(3), cand, z, G, np.array([1990, 2000, 2010], np.float32), t)
    assert np.isfinite(F).all()
    f = {n: F[..., k] for k, n in enumerate(st.FEATURES)}
    assert f["local_pop"][2].tolist() == [0.0, 0.0] and f["local_share"][2].tolist() == [0.0, 0.0]
    y = np.array([[1, 0], [0, 1], [0, 0]], np.float32)
    r = st.Ranker(st.RankerConfig(hidden=4, layers=1, epochs=2, batch_users=2)).fit(F, y)
    assert np.isfinite(r.mu).all() and np.isfinite(r.sd).all() and np.isfinite(r.score(F)).all()
