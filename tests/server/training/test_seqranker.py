"""The hard-negative ranker: where its examples come from, what it starts as, when it ships, its ONNX graphs."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from pocketrank.exporter.sequence_export import export_learned_ranker
from pocketrank.server.training import seqranker
from pocketrank.server.training.seqmodel import SeqConfig, SequenceRecommender
from pocketrank.server.training.seqranker import ResidualRanker, fit_ranker, hard_negatives, order_metrics
from pocketrank.server.training.seqtrain import Histories, rank_metrics, user_vectors
from pocketrank.shared.errors import ModelError


def _model(n_items: int = 40, seed: int = 0) -> SequenceRecommender:
    torch.manual_seed(seed)
    return SequenceRecommender(SeqConfig(n_items=n_items, dim=8, layers=1, heads=2, max_len=6, seed=seed)).eval()


def _histories(seqs: list[list[int]]) -> Histories:
    return Histories([np.asarray(s, np.int64) for s in seqs], [np.zeros(len(s), np.int64) for s in seqs],
                     [np.arange(len(s), dtype=np.float64) * 60 for s in seqs])


def test_an_untrained_ranker_is_retrieval_order_exactly():
    torch.manual_seed(1)
    r = ResidualRanker(8).eval()
    user, items = torch.randn(1, 8), torch.randn(30, 8)
    with torch.no_grad():
        assert torch.allclose(r(user, items), torch.sigmoid(items @ user[0]), atol=1e-7)


def test_examples_are_the_servers_user_vectors_after_a_prefix_and_retrievals_top_k_without_it():
    seqs = [[3, 17, 5, 29, 11, 0, 8, 22], [1, 2, 4, 6], [9, 30]]  # the first longer than max_len (6)
    m = _model()
    h = _histories(seqs)
    states, cands, places = hard_negatives(m, h, np.random.default_rng(0), per_user=50, k=40)
    assert cands.shape[1] == 40 - 8  # never wider than what the longest history leaves
    assert 0 < len(states) <= 7 + 3 + 1  # at most every prefix; the next product found or the prefix dropped
    items = m.item_vectors().detach()
    seen = set()
    for state, row, place in zip(states, cands.tolist(), places.tolist()):
        target = row[place]
        u = next(j for j, s in enumerate(seqs) if target in s[1:])
        p = seqs[u].index(target)
        seen.add((u, p))
        past = seqs[u][:p]
        # the vector the server computes from the prefix (its newest max_len events, the newest last)
        want = user_vectors(m, _histories([past]))[0]
        assert np.allclose(state.numpy(), want, atol=1e-5)
        # retrieval's top k for it, best first, the prefix left out
        s = items @ state
        s[past] = -np.inf
        assert row == torch.topk(s, len(row)).indices.tolist() and not set(row) & set(past)
    assert len(seen) == len(states)
    # A cap on the examples: a sample of users, one prefix each.
    many = _histories([[i % 40, (i + 1) % 40, (i + 2) % 40] for i in range(50)])
    capped = hard_negatives(m, many, np.random.default_rng(0), max_examples=10)[0]
    assert len(capped) <= 10


def test_order_metrics_in_retrieval_order_are_the_full_rankings():
    rng = np.random.default_rng(2)
    seqs = [rng.choice(60, size=int(rng.integers(3, 9)), replace=False).tolist() for _ in range(40)]
    m = _model(60)
    h = _histories([s[:-1] for s in seqs])
    targets = np.array([s[-1] for s in seqs])
    targets[:5] = -1  # users without a target are not judged
    got = order_metrics(m, None, h, targets, k=30)
    want = rank_metrics(m, h, targets)
    assert set(got) == {"retrieval"} and got["retrieval"]["users"] == 35
    assert got["retrieval"]["HR@10"] == pytest.approx(want["HR@10"]) and got["retrieval"]["nDCG@10"] == pytest.approx(
        want["nDCG@10"])
    # A catalogue smaller than a history and the candidates together: an untrained ranker (retrieval order)
    # gives retrieval's figures, the history kept out of its lists too.
    small = _model(14)
    hist = _histories([[0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [10, 11, 0, 1, 2, 3, 4, 5]])
    both = order_metrics(small, ResidualRanker(8).eval(), hist, np.array([12, 13]))
    assert both["ranker"] == both["retrieval"]


def test_the_ranker_ships_only_as_chosen_or_when_it_beats_retrieval_on_validation():
    rng = np.random.default_rng(3)
    seqs = [rng.choice(80, size=12, replace=False).tolist() for _ in range(60)]
    m = _model(80)
    train, val = _histories([s[:-1] for s in seqs]), np.array([s[-1] for s in seqs])
    assert fit_ranker(m, train, (train, val), 0, "retrieval").ranker is None
    forced = fit_ranker(m, train, (train, val), 0, "learned")
    assert forced.ranker is not None and forced.report["kind"] == "learned" and forced.report["examples"] > 0
    auto = fit_ranker(m, train, (train, val), 0, "auto")
    assert (auto.ranker is not None) == (auto.report["val_gain"] >= seqranker.MIN_GAIN)
    assert auto.report["kind"] == ("learned" if auto.ranker is not None else "retrieval")
    # The same seed, the same ranker.
    again = fit_ranker(m, train, (train, val), 0, "learned")
    assert all(torch.equal(a, b) for a, b in zip(forced.ranker.state_dict().values(),
                                                 again.ranker.state_dict().values()))


def test_a_bad_ranker_choice_is_refused_by_the_config():
    with pytest.raises(ModelError, match="ranker must be one of"):
        SeqConfig(n_items=3, ranker="mlp")


def test_saved_and_exported_rankers_score_as_torch(tmp_path):
    torch.manual_seed(4)
    r = ResidualRanker(16)
    with torch.no_grad():  # a correction that matters (a fresh ranker's is zero)
        r.out.weight.normal_(0, 0.5)
    seqranker.save_ranker(r, tmp_path)
    back = seqranker.load_ranker(tmp_path)
    user, items = torch.randn(1, 16), torch.randn(200, 16)
    with torch.no_grad():
        want = r.eval()(user, items).numpy()
        assert np.allclose(back(user, items).numpy(), want)
    info = export_learned_ranker(back, tmp_path / "r.fp32.onnx", tmp_path / "r.int8.onnx", 16)
    assert info["kind"] == "learned" and info["quantization"]["quantized_matmuls"] >= 3
    feed = {"user": user.numpy(), "items": items.numpy()}
    fp32 = ort.InferenceSession(str(tmp_path / "r.fp32.onnx")).run(None, feed)[0]
    int8 = ort.InferenceSession(str(tmp_path / "r.int8.onnx")).run(None, feed)[0]
    assert np.abs(fp32 - want).max() < 1e-5
    assert len(set(np.argsort(-int8)[:10]) & set(np.argsort(-want)[:10])) >= 8
    (tmp_path / seqranker.RANKER_FILE).write_bytes(b"not a ranker")
    with pytest.raises(ModelError, match="not a ranker"):
        seqranker.load_ranker(tmp_path)
    assert seqranker.load_ranker(tmp_path / "elsewhere") is None
