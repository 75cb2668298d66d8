"""The sequence model's parts: the encoder's feed, padding, the content tower, training windows, the loss paths."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pocketrank.server.training import seqmodel
from pocketrank.server.training.content import (
    ContentTower,
    ContentVocab,
    content_vector,
    content_vectors,
    product_tokens,
)
from pocketrank.server.training.content_fit import fit_content_map
from pocketrank.server.training.seqmodel import MaskDropout, SeqConfig, SequenceRecommender
from pocketrank.server.training.seqtrain import Histories, fit, padded, rank_metrics, user_vectors, windows
from pocketrank.shared.errors import ModelError
from pocketrank.shared.schemas import EVENT_TYPES, Item
from pocketrank.shared.sequence import N_GAPS, encoder_feed, gap_buckets, kept_events

CLICK = EVENT_TYPES.index("click")


def test_gap_buckets_first_event_and_growth():
    g = gap_buckets([0.0, 0.0, 1.0, 3.0, 1e12])
    assert g[0] == 1 and g[1] == 2  # first event; a gap of 0 s
    assert g[2] == 3 and g[3] == 3  # 1 s and 2 s: log2(2), log2(3) floor to 1
    assert g[4] == N_GAPS - 1  # capped


def test_kept_events_collapse_runs_and_drop_unknown_and_non_choices():
    events = [("view", "a", 1.0), ("click", "a", 2.0), ("purchase", "a", 3.0), ("impression", "b", 4.0),
              ("search", None, 5.0), ("click", None, 6.0), ("click", "b", 7.0), ("click", "a", 8.0)]
    # The run a, a, a keeps its last (the purchase); the impression, the search and the unknown product go;
    # a comes back after b as a new entry.
    assert kept_events(events) == [2, 6, 7]


def test_encoder_feed_types_gaps_and_tail():
    vecs = [np.full(4, k, np.float32) for k in range(5)]
    events = [("click", k, float(10 * k)) for k in range(5)]
    feed = encoder_feed(events, vecs, max_len=3, dim=4)
    assert feed is not None
    assert feed["items"].shape == (1, 3, 4) and feed["items"][0, :, 0].tolist() == [2, 3, 4]
    assert feed["types"].tolist() == [[CLICK + 1] * 3]
    # Gaps are measured over the whole history before the tail is cut: the first kept one is not "first".
    assert feed["gaps"].tolist() == [gap_buckets([0, 10, 20, 30, 40])[-3:].tolist()]
    assert encoder_feed([("click", None, 1.0)], [None], 3, 4) is None


def _model(n_items=30, n_tokens=0, tokens=None, **kw) -> SequenceRecommender:
    torch.manual_seed(0)
    return SequenceRecommender(SeqConfig(n_items=n_items, n_tokens=n_tokens, max_len=8, **kw), tokens).eval()


def test_user_vector_does_not_depend_on_padding():
    m = _model()
    h = Histories([np.array([3, 5, 7])], [np.array([CLICK] * 3, np.int8)], [np.array([0.0, 5.0, 90.0])])
    rows, types, gaps = (torch.from_numpy(a) for a in padded(h, [0], 8))
    short = (torch.from_numpy(a) for a in padded(h, [0], 3))
    table = m.table()
    with torch.no_grad():
        a = m.user_states(table, rows, types, gaps)[:, -1]
        b = m.user_states(table, *short)[:, -1]
    assert torch.allclose(a, b, atol=1e-5)


def test_feed_and_training_padding_agree():
    """What the server and device feed the graph (pocketrank.shared.sequence) is what training's padding gives torch."""
    m = _model()
    h = Histories([np.array([1, 4, 9])], [np.array([CLICK, EVENT_TYPES.index("purchase"), CLICK], np.int8)],
                  [np.array([0.0, 4.0, 400.0])])
    items = m.item_vectors().detach().numpy()
    events = [(EVENT_TYPES[int(c)], int(r), float(t)) for r, c, t in zip(h.rows[0], h.types[0], h.times[0])]
    feed = encoder_feed(events, [items[int(r)] for r in h.rows[0]], 8, items.shape[1])
    with torch.no_grad():
        got = m.encoder(*(torch.from_numpy(feed[k]) for k in ("items", "types", "gaps")))[0].numpy()
    assert np.allclose(got, user_vectors(m, h)[0], atol=1e-5)


def test_windows_cover_every_target_once():
    h = Histories([np.arange(7)], [np.zeros(7, np.int8)], [np.arange(7, dtype=float)])
    X, T, G, Y = windows(h, 3)
    targets = sorted(int(y) - 1 for y in Y[Y > 0])
    assert targets == list(range(1, 7))  # every product but the first is a target exactly once
    # Inputs are the previous products: wherever there is a target, the input just before it in time is there.
    assert ((X > 0) == (Y > 0)).all()


def _items() -> list[Item]:
    return [Item(item_id=k + 1, title=f"Knife {k}" if k % 2 else f"Pan {k}", category="Home > Kitchen",
                 categories=("Home", "Kitchen"), price=10.0 * (k % 3 + 1), sku=f"S{k}") for k in range(6)]


def test_content_tokens_and_vocab():
    toks = product_tokens(_items()[1])
    assert "cat:home" in toks and "path:home > kitchen" in toks and "title:knife" in toks
    assert any(t.startswith("price:") for t in toks)
    vocab = ContentVocab.build(_items())
    assert "title:knife" in vocab.index  # shared by three products
    assert ContentVocab.from_list(vocab.to_list()).index == vocab.index


def test_content_vector_is_the_towers_content_part(tmp_path):
    items = _items()
    vocab = ContentVocab.build(items)
    m = _model(n_items=len(items), n_tokens=len(vocab), tokens=vocab.matrix(items))
    with torch.no_grad():
        torch_content = m.content()[1:].numpy()
    tower = ContentTower(vocab, m.token.weight.detach().numpy(), m.content_proj.weight.detach().numpy())
    tower.save(tmp_path)
    loaded = ContentTower.load(tmp_path)
    assert loaded is not None
    new = Item(item_id=99, title="Knife deluxe", category="Home > Kitchen", categories=("Home", "Kitchen"),
               price=10.0, sku="NEW")
    # A product never trained on: its content tokens are known ones, so it is placed by them alone.
    assert loaded.vector(new) is not None
    assert np.allclose(loaded.vector(items[3]), torch_content[3], atol=1e-5)
    assert loaded.vector(Item(item_id=100, title="zzz", category="", sku="X")) is None  # nothing known: no guess
    assert ContentTower.load(tmp_path / "nothing") is None


def test_content_map_is_the_ridge_solution_and_skips_tokenless_products():
    rng = np.random.default_rng(0)
    n, n_tokens, dim, ridge = 40, 8, 5, 0.1
    tokens = np.zeros((n, 4), np.int64)
    for k in range(n - 4):  # the last 4 products: no known token, or a vector that is not finite
        picked = rng.choice(np.arange(1, n_tokens), size=rng.integers(1, 5), replace=False)
        tokens[k, : len(picked)] = picked
    tokens[n - 1, 0] = n_tokens  # token 8 is carried only by a product whose vector is NaN
    vectors = rng.normal(size=(n, dim))
    vectors[n - 4: n - 1] = 1e6  # were they fitted, they would swamp every row
    vectors[n - 1] = np.nan
    got = fit_content_map(tokens, vectors, n_tokens, ridge)
    assert got is not None
    table, supported, fit = got
    shares = np.zeros((n - 4, n_tokens + 1))
    for k in range(n - 4):
        picked = tokens[k][tokens[k] > 0]
        shares[k, picked] = 1.0 / len(picked)
    want = np.linalg.solve(shares.T @ shares + ridge * np.eye(n_tokens + 1), shares.T @ vectors[: n - 4])
    assert table.shape == (n_tokens + 1, dim) and np.allclose(table, want, atol=1e-4)
    assert np.allclose(table[0], 0.0) and not supported[0]  # the padding row has no product
    assert not supported[n_tokens] and np.allclose(table[n_tokens], 0.0)  # only the NaN product carries it
    assert fit["products"] == n - 4 and 0.0 < fit["r2"] < 1.0 and fit["converged"]
    # content_vectors is content_vector for token rows; NaN where a product has no known token.
    vocab = ContentVocab.build(_items())
    t2 = rng.normal(size=(len(vocab) + 1, dim)).astype(np.float32)
    t2[0] = 0.0
    proj = rng.normal(size=(dim, dim)).astype(np.float32)
    rows = vocab.matrix(_items() + [Item(item_id=99, title="zzz", category="", sku="Z")])
    many = content_vectors(rows, t2, proj)
    assert np.allclose(many[1], content_vector(_items()[1], vocab, t2, proj), atol=1e-5)
    assert np.isnan(many[-1]).all()
    # Nothing to fit (fewer than two products with content and a finite vector): the caller keeps its tower.
    assert fit_content_map(tokens[n - 5: n - 3], vectors[n - 5: n - 3], n_tokens, ridge) is None
    with pytest.raises(ValueError, match="ridge"):
        fit_content_map(tokens, vectors, n_tokens, float("nan"))


@pytest.mark.parametrize("ridge", [0.0, 0.1])
def test_saved_tower_is_the_fit_or_the_trained_table(tmp_path, ridge):
    from pocketrank.server.jobs.sequence import save_model
    from pocketrank.shared.errors import ModelError

    items = _items()
    vocab = ContentVocab.build(items)
    m = _model(n_items=len(items), n_tokens=len(vocab), tokens=vocab.matrix(items), content_ridge=ridge)
    with torch.no_grad():
        model_vecs = m.item_vectors().numpy()
        trained_table = m.token.weight.numpy() @ m.content_proj.weight.numpy().T
    trained = np.array([True] * 4 + [False] * 2)  # two rows training never saw: not fitting targets
    tower, vecs, fit = save_model(m, vocab, tmp_path, {"item_ids": [it.item_id for it in items]}, trained=trained)
    loaded = ContentTower.load(tmp_path)
    assert loaded is not None and np.allclose(loaded.table, tower.table)
    if ridge == 0:  # the trained tower, as before the fit existed
        assert fit is None and np.allclose(loaded.table, m.token.weight.detach().numpy())
    else:
        got = fit_content_map(vocab.matrix(items)[trained], model_vecs[trained], len(vocab), ridge)
        assert got is not None and fit is not None and fit["products"] == 4
        table, supported, _ = got
        assert np.allclose(loaded.table[supported], table[supported])
        # a token only unseen products carry keeps the trained tower's row (projected): no evidence to refit it
        assert np.allclose(loaded.table[~supported], trained_table[~supported], atol=1e-6)
    # Seen rows publish the model's vectors; unseen ones their content vector, as a product new since training.
    assert np.allclose(vecs[trained], model_vecs[trained])
    for k in np.flatnonzero(~trained):
        assert np.allclose(vecs[k], loaded.vector(items[k]), atol=1e-5)
    with pytest.raises(ModelError, match="content_ridge"):
        SeqConfig(n_items=3, content_ridge=-1.0)


def _toy_histories(n_users=60, n_items=20, seed=0) -> Histories:
    """Users walk a ring of products (next = current + 1 or + 2): a sequence model must learn the step."""
    rng = np.random.default_rng(seed)
    rows, types, times = [], [], []
    for _ in range(n_users):
        start, n = rng.integers(n_items), rng.integers(6, 12)
        seq = (start + np.cumsum(rng.integers(1, 3, n))) % n_items
        rows.append(seq.astype(np.int64))
        types.append(np.full(n, CLICK, np.int8))
        times.append(np.arange(n, dtype=float) * 60)
    return Histories(rows, types, times)


@pytest.mark.parametrize("full_softmax_max", [50_000, 5])  # 5: the sampled softmax with logQ correction
def test_fit_learns_the_next_product(full_softmax_max):
    h = _toy_histories()
    train = h.head(1)
    target = np.array([r[-1] for r in h.rows])
    c = SeqConfig(n_items=20, max_len=8, epochs=15, dim=16, dropout=0.1, id_dropout=0.0, lr=1e-2, batch_size=16,
                  full_softmax_max=full_softmax_max, negatives=16)
    r = fit(train, c, progress=False)
    m = rank_metrics(r.model, train, target)
    # Two possible next products among 20 (the history mostly excluded): random would hit about half as often.
    assert m["HR@10"] > 0.9
    assert r.history[-1]["loss"] < r.history[0]["loss"]


def test_early_stopping_keeps_the_best_epoch():
    h = _toy_histories(seed=1)
    val = np.array([r[-1] for r in h.rows])
    c = SeqConfig(n_items=20, max_len=8, epochs=6, dim=16, patience=1, batch_size=32)
    r = fit(h.head(1), c, val=(h.head(1), val), progress=False, eval_every=1)
    best = max(row["val_nDCG@10"] for row in r.history)
    assert r.history[r.best_epoch - 1]["val_nDCG@10"] == best
    assert rank_metrics(r.model, h.head(1), val)["nDCG@10"] == pytest.approx(best)


@pytest.mark.parametrize("schedule", ["constant", "linear"])
def test_the_linear_schedule_spends_the_rate_by_the_last_epoch(schedule):
    c = SeqConfig(n_items=20, max_len=8, epochs=4, dim=16, lr=1e-2, batch_size=16, lr_schedule=schedule)
    rates = [row["lr"] for row in fit(_toy_histories().head(1), c, progress=False).history]
    if schedule == "constant":
        assert rates == [1e-2] * 4
    else:  # falls by a quarter of the rate an epoch, to 0 after the last step
        assert rates == pytest.approx([7.5e-3, 5e-3, 2.5e-3, 0.0], abs=1e-12)


def test_a_linear_schedule_runs_its_budget_and_keeps_the_best_epoch():
    h = _toy_histories(seed=1)
    val = np.array([r[-1] for r in h.rows])
    c = SeqConfig(n_items=20, max_len=8, epochs=6, dim=16, patience=1, batch_size=32, lr_schedule="linear")
    r = fit(h.head(1), c, val=(h.head(1), val), progress=False, eval_every=1)
    assert [row["epoch"] for row in r.history] == [1, 2, 3, 4, 5, 6]  # patience does not cut a decaying rate
    assert rank_metrics(r.model, h.head(1), val)["nDCG@10"] == pytest.approx(
        max(row["val_nDCG@10"] for row in r.history))


def test_an_unknown_schedule_is_refused_before_training():
    with pytest.raises(ModelError, match="lr_schedule must be one of constant, linear"):
        SeqConfig(n_items=20, lr_schedule="cosine")


def test_the_table_of_some_rows_is_those_rows_of_the_whole_table():
    torch.manual_seed(0)
    tokens = np.random.default_rng(0).integers(0, 9, size=(30, 4))  # 0 = no token
    model = SequenceRecommender(SeqConfig(n_items=30, n_tokens=8, dim=8), tokens)
    rows = torch.tensor([0, 3, 4, 17, 30])
    whole = model.table()
    part = model.table(rows=rows)
    assert part.shape == (5, 8) and torch.allclose(part, whole[rows], atol=1e-6)
    assert torch.count_nonzero(part[0]) == 0  # the padding row
    # Id dropout of every row (rand < 1 always): what is left is each row's content part.
    assert torch.allclose(model.table(1.0, rows), model.content(rows), atol=1e-6)


def test_mask_dropout_is_dropout():
    torch.manual_seed(0)
    x = torch.ones(200_000)
    d = MaskDropout(0.3)
    y = d(x)
    kept = y > 0
    assert abs(float(kept.float().mean()) - 0.7) < 0.01  # a share p of the entries is zeroed
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / 0.7))  # the rest scaled to keep the mean
    assert abs(float(y.mean()) - 1.0) < 0.01
    assert torch.equal(d.eval()(x), x)  # identity in eval, as in the exported graph
    assert torch.equal(MaskDropout(0.0).train()(x), x)
    assert float(MaskDropout(1.0).train()(x).abs().sum()) == 0.0
    assert MaskDropout(0.3).state_dict() == {}  # nothing in the saved model changes
    with pytest.raises(ModelError, match="dropout"):
        MaskDropout(1.5)


def test_width_must_divide_into_heads():
    with pytest.raises(ModelError, match="multiple of heads"):
        SeqConfig(n_items=3, dim=30, heads=4)


def test_a_model_with_a_setting_this_version_does_not_know_is_a_model_error(tmp_path):
    import json

    seqmodel.save(_model(), tmp_path)
    meta = json.loads((tmp_path / "config.json").read_text())
    meta["config"]["from_the_future"] = 1
    (tmp_path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="another pocketrank version"):
        seqmodel.load(tmp_path)
