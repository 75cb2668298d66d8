"""Quality tooling: splits, peers' closed forms, vectorised metrics, beyond-accuracy, BYO data (research
hybrid and the `train --interactions` / `recommend` CLI)."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import scipy.sparse as sp

from lab.quality import beyond
from lab.quality.hybrid import DLAE, ContentMap, SegmentPrior
from lab.quality.peers import EASE, ease_weights
from lab.quality.splits import held_out, protocol2_split, python_stratified_split
from pocketrank.server.training import ranking_metrics as metrics


def test_vectorised_accuracy_matches_pure_functions():
    rng = np.random.default_rng(0)
    n_users, n_items, k = 30, 40, 10
    rel = (rng.random((n_users, n_items)) < 0.15).astype(np.float32)
    rel[0] = 0  # a user with nothing relevant is skipped, as the benchmark does
    scores = rng.random((n_users, n_items))
    top = beyond.top_k(scores, k)
    got = beyond.accuracy(top, sp.csr_matrix(rel), k)
    rows = [u for u in range(n_users) if rel[u].any()]
    want = {
        "P@10": np.mean([metrics.precision_at_k(top[u].tolist(), set(np.flatnonzero(rel[u])), k) for u in rows]),
        "R@10": np.mean([metrics.recall_at_k(top[u].tolist(), set(np.flatnonzero(rel[u])), k) for u in rows]),
        "nDCG@10": np.mean([metrics.ndcg_at_k(top[u].tolist(), set(np.flatnonzero(rel[u])), k) for u in rows]),
        "MAP@10": np.mean([metrics.average_precision(top[u].tolist(), set(np.flatnonzero(rel[u]))) for u in rows]),
    }
    for key, v in want.items():
        assert got[key] == pytest.approx(v)
    assert got["users"] == len(rows)


def test_accuracy_hand_computed():
    # one user, relevant {1, 2, 9}, ranked [3, 1, 7, 2]: the values of tests/server/training/test_metrics.py
    rel = sp.csr_matrix(np.isin(np.arange(10), [1, 2, 9]).astype(np.float32)[None])
    got = beyond.accuracy(np.array([[3, 1, 7, 2]]), rel, k=4)
    assert got["P@4"] == 0.5
    assert got["R@4"] == pytest.approx(2 / 3)
    assert got["nDCG@4"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3) + 0.5))
    assert got["MAP@4"] == pytest.approx((1 / 2 + 2 / 4) / 3)


def test_top_k_orders_best_first_with_ties_by_index():
    s = np.array([[0.1, 0.9, 0.5, 0.9, -np.inf]])
    assert beyond.top_k(s, 3).tolist() == [[1, 3, 2]]


def test_stratified_split_invariants():
    rng = np.random.default_rng(1)
    items = rng.integers(0, 50, size=2000)
    users = rng.integers(0, 80, size=2000)
    train = python_stratified_split(users, items, 0.75, "item", seed=42)
    for i in np.unique(items):
        n = (items == i).sum()
        # rank/n <= 0.75 keeps floor(0.75 n) rows (an item seen once goes to test)
        assert train[items == i].sum() == math.floor(0.75 * n + 1e-9)
    assert np.array_equal(train, python_stratified_split(users, items, 0.75, "item", seed=42))
    assert not np.array_equal(train, python_stratified_split(users, items, 0.75, "item", seed=43))
    by_user = python_stratified_split(users, items, 0.75, "user", seed=42)
    for u in np.unique(users):
        assert by_user[users == u].sum() == math.floor(0.75 * (users == u).sum() + 1e-9)


def test_stratified_split_draws_like_the_library():
    # The library: np.random.seed(42); data["random"] = np.random.rand(n); sort by (item, random).
    items = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    np.random.seed(42)
    draw = np.random.rand(len(items))
    train = python_stratified_split(np.zeros(8, int), items, 0.75, "item", seed=42)
    for i in (0, 1):
        rows = np.flatnonzero(items == i)
        last = rows[np.argmax(draw[rows])]  # the largest draw ranks 4/4 > 0.75 -> test
        assert train[rows].tolist() == [r != last for r in rows]


def test_protocol2_split_and_held_out():
    train, val, test = protocol2_split([np.array([1, 2, 3, 4]), np.array([5, 6])])
    assert train[0].tolist() == [1, 2] and val.tolist() == [3, -1] and test.tolist() == [4, -1]
    assert train[1].tolist() == [5, 6]
    m = held_out(100, 0.1, seed=0)
    assert m.sum() == 10 and np.array_equal(m, held_out(100, 0.1, seed=0))


def test_ease_matches_its_closed_form_per_column():
    rng = np.random.default_rng(2)
    X = sp.csr_matrix((rng.random((12, 6)) < 0.4).astype(np.float32))
    lam = 2.0
    B = ease_weights(X, lam)
    Xd = X.toarray().astype(np.float64)
    for j in range(6):
        others = [c for c in range(6) if c != j]
        A = Xd[:, others]
        b = np.linalg.solve(A.T @ A + lam * np.eye(5), A.T @ Xd[:, j])
        assert np.allclose(B[others, j], b, atol=1e-4)
        assert B[j, j] == 0.0
    m = EASE(lam).fit(X)
    assert np.allclose(m.scores(np.arange(12)), Xd @ B, atol=1e-5)


def test_dlae_closed_form():
    rng = np.random.default_rng(3)
    X = sp.csr_matrix((rng.random((10, 5)) < 0.5).astype(np.float32))
    G = (X.T @ X).toarray()
    m = DLAE(lam=1.0, p=0.5).fit(X)
    want = np.linalg.solve(G + np.diag(np.diag(G) + 1.0), G)  # p/(1-p) = 1
    assert np.allclose(m.B, want, atol=1e-5)


def test_beyond_accuracy_hand_values():
    top = np.array([[0, 1], [0, 2]])
    assert beyond.coverage(top, 4) == 0.75
    counts = np.array([10, 5, 1, 0])  # percentiles 100, 66.7, 33.3, 0
    assert beyond.popularity_percentile(top, counts) == pytest.approx((100 + 200 / 3 + 100 + 100 / 3) / 4)
    vecs = np.array([[1.0, 0], [0, 1.0], [1.0, 0], [1, 1.0]])
    # list 1: orthogonal (distance 1); list 2: identical (distance 0)
    assert beyond.intra_list_diversity(top, vecs) == pytest.approx(0.5)


def test_mmr_knob_zero_is_plain_top_k_and_diversifies_when_raised():
    rng = np.random.default_rng(4)
    scores = rng.random((5, 30))
    vecs = rng.normal(size=(30, 8))
    assert np.array_equal(beyond.mmr(scores, vecs, 5, 0.0, pool=20), beyond.top_k(scores, 5))
    plain = beyond.intra_list_diversity(beyond.top_k(scores, 5), vecs)
    assert beyond.intra_list_diversity(beyond.mmr(scores, vecs, 5, 0.8, pool=20), vecs) > plain


def test_content_map_and_segment_prior():
    F = np.eye(4, dtype=np.float32)
    V = np.arange(8, dtype=np.float32).reshape(4, 2)
    cm = ContentMap(alpha=1e-6).fit(F, V)
    assert np.allclose(cm.transform(F), V, atol=1e-3)
    users = np.array([0, 0, 1, 1, 1])
    items = np.array([0, 1, 2, 2, 1])
    feats = {"a": {"gender": "F", "age_band": "18-24", "occupation": "x"},
             "b": {"gender": "M", "age_band": "18-24", "occupation": "y"}}
    seg = SegmentPrior(m=0.0).fit(users, items, np.array(["a", "b"]), feats, 3)
    assert np.allclose(seg.scores_for(feats["b"]), [0, 1 / 3, 2 / 3])
    assert np.allclose(SegmentPrior(m=1e9).fit(users, items, np.array(["a", "b"]), feats, 3)
                       .scores_for({}), [0.2, 0.4, 0.4])


def _byo_file(path):
    rng = np.random.default_rng(5)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["user_id", "item_id", "timestamp", "rating"])
        for u in range(30):
            for t, i in enumerate(rng.choice(40, size=8, replace=False)):
                w.writerow([f"user-{u}", f"sku-{i}", 1000 * u + t, 4])
    return path


def _recs_by_user(out, columns):
    rows = list(csv.DictReader(open(out)))
    assert list(rows[0]) == columns
    by_user: dict[str, list[str]] = {}
    for row in rows:
        by_user.setdefault(row["user_id"], []).append(row["item_id"])
    return rows, by_user


def test_byo_hybrid_round_trip(tmp_path):
    """The research hybrid (DLAE + sequence tower) on a CSV of one's own (lab/quality/byo.py)."""
    from lab.quality import byo

    path = _byo_file(tmp_path / "interactions.csv")
    r = byo.train(path, tmp_path / "m", seq_epochs=1)
    assert r["users"] == 30 and r["interactions"] == 240
    (tmp_path / "users.txt").write_text("user-0\nuser-7\nnobody\n")
    out = tmp_path / "recs.csv"
    assert byo.recommend(tmp_path / "m", tmp_path / "users.txt", 5, out) == 3
    _, by_user = _recs_by_user(out, ["user_id", "item_id", "rank", "score"])
    assert set(by_user) == {"user-0", "user-7", "nobody"}  # unknown users get popular items
    assert all(len(v) == 5 for v in by_user.values())
    had = {(row["user_id"], row["item_id"]) for row in csv.DictReader(open(path))}
    assert not any((u, i) in had for u, items in by_user.items() for i in items)


def test_byo_hybrid_rejects_a_bad_file(tmp_path):
    from lab.quality import byo
    from pocketrank.shared.errors import DataError

    bad = tmp_path / "bad.csv"
    bad.write_text("user,item\n1,2\n")
    with pytest.raises(DataError, match="user_id,item_id,timestamp"):
        byo.train(bad, tmp_path / "m")


@pytest.mark.slow
def test_train_and_recommend_cli_on_a_file_round_trip(tmp_path):
    """`pocketrank train --interactions` / `recommend`: imported into a new home, served by the server's path."""
    from click.testing import CliRunner

    from pocketrank.cli import main

    path = _byo_file(tmp_path / "interactions.csv")
    runner = CliRunner()
    r = runner.invoke(main, ["train", "--interactions", str(path), "--out", str(tmp_path / "m"), "--epochs", "1"])
    assert r.exit_code == 0, r.output
    (tmp_path / "users.txt").write_text("user-0\nuser-7\nnobody\n")
    out = tmp_path / "recs.csv"
    r = runner.invoke(main, ["recommend", "--model", str(tmp_path / "m"), "--users", str(tmp_path / "users.txt"),
                             "-k", "5", "--out", str(out)])
    assert r.exit_code == 0, r.output
    rows, by_user = _recs_by_user(out, ["user_id", "item_id", "rank", "score", "path"])
    assert set(by_user) == {"user-0", "user-7", "nobody"}
    assert all(len(v) == 5 and all(i.startswith("sku-") for i in v) for v in by_user.values())
    paths = {row["user_id"]: row["path"] for row in rows}
    assert paths == {"user-0": "personal", "user-7": "personal", "nobody": "popular"}  # unknown users: popular
    assert [int(row["rank"]) for row in rows if row["user_id"] == "user-0"] == [1, 2, 3, 4, 5]
    had = {(row["user_id"], row["item_id"]) for row in csv.DictReader(open(path))}
    assert not any((u, i) in had for u, items in by_user.items() for i in items)  # clicked: never again


def test_train_cli_on_a_bad_file_names_the_missing_columns(tmp_path):
    from click.testing import CliRunner

    from pocketrank.cli import main

    bad = tmp_path / "bad.csv"
    bad.write_text("user,item\n1,2\n")
    r = CliRunner().invoke(main, ["train", "--interactions", str(bad), "--out", str(tmp_path / "m")])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "no item_id, timestamp, user_id column" in r.output and "(it has user, item)" in r.output


def test_seq_tower_is_causal_and_learns_a_cycle():
    import torch

    from lab.quality.seqrec import SeqConfig, SeqTower, fit, score, windows

    torch.manual_seed(0)
    c = SeqConfig(n_items=6, dim=16, layers=1, heads=2, max_len=8, dropout=0.0, epochs=20, lr=1e-2)
    tower = SeqTower(c).eval()
    a = torch.tensor([[0, 0, 1, 2, 3, 4, 5, 6]])
    b = a.clone()
    b[0, -1] = 1
    with torch.no_grad():
        assert torch.allclose(tower.hidden(a)[0, :-1], tower.hidden(b)[0, :-1], atol=1e-5)
    X, Y = windows([np.array([0, 1, 2, 3])], 2)
    assert X.tolist() == [[2, 3], [0, 1]] and Y.tolist() == [[3, 4], [0, 2]]
    cycle = [np.array([i % 6 for i in range(s, s + 20)]) for s in range(6)]
    model, report = fit(cycle, c)
    nxt = score(model, [np.array([0, 1, 2])]).argmax(1)
    assert nxt.tolist() == [3] and report["best_epoch"] == 20


def test_tuning_carves_exclude_every_benchmark_seeds_held_out_ids():
    from lab.quality.data import Interactions
    from lab.quality.splits import BENCH_SEEDS, benchmark_held_out, cold_users_mask, new_items_mask
    from lab.quality.tuning import _new_items_carve, cold_user_carve

    n_users, n_items = 943, 1682  # MovieLens-100k's sizes: the benchmark's draws exactly
    union_u = benchmark_held_out(n_users, "users")
    assert np.array_equal(union_u, np.logical_or.reduce([cold_users_mask(n_users, s) for s in BENCH_SEEDS]))
    assert union_u.sum() > cold_users_mask(n_users, 0).sum()  # the seeds' draws differ
    for vseed in (51, 52, 53):
        cold, warm = cold_user_carve(n_users, vseed)
        assert cold.sum() > 0 and not (cold & warm).any()
        assert not ((cold | warm) & union_u).any()  # no seed's test user is fitted on or validated on
    rng = np.random.default_rng(0)
    d = Interactions(rng.integers(0, 50, 5000), rng.integers(0, n_items, 5000), np.arange(5000.0),
                     np.array([str(u) for u in range(50)]), np.array([str(i) for i in range(n_items)]))
    union_i = benchmark_held_out(n_items, "items")
    assert np.array_equal(union_i, np.logical_or.reduce([new_items_mask(n_items, s) for s in BENCH_SEEDS]))
    for seed in BENCH_SEEDS:
        sub, pseudo = _new_items_carve(d, seed, 99)
        assert not union_i[sub.items].any() and not (pseudo & union_i).any()
        assert pseudo.sum() == (~union_i).sum() // 10
    assert not np.array_equal(_new_items_carve(d, 0, 99)[1], _new_items_carve(d, 1, 99)[1])
    with pytest.raises(ValueError, match="kind"):
        benchmark_held_out(10, "rows")
