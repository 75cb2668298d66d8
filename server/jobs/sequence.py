"""`pocketrank train` and `pocketrank export` for the sequence model (server/training/seqmodel.py).

Training reads the store's history (server/training/history.py) with each
event's type and time, holds out every user's last two products (the
second-to-last picks the epoch, the last is the test figure printed), trains
the hard-negative ranker (server/training/seqranker.py: kept only if it beats
retrieval order on the validation products), and writes the model beside its
content tower (content.npz, for products added later) and its item vectors.
Export writes the encoder in fp32 (the server's) and int8 (the device's) and
the ranker: the learned one, or the retrieval score as a graph.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time

import numpy as np
import torch

from pocketrank.exporter.parity import INT8_GATES
from pocketrank.exporter.sequence_export import export_learned_ranker, export_retrieval_ranker, export_sequence_encoder
from pocketrank.shared.errors import ModelError

from ..config import Config
from ..home import Home
from ..online.catalogue import Catalogue, provisional_vector
from ..online.encoding import ENCODER_FP32
from ..online.fold import rebuild_states
from ..online.versions import save_vectors
from ..training import seqmodel
from ..training.content import ContentTower, ContentVocab, content_vectors
from ..training.content_fit import fit_content_map
from ..training.history import load_history
from ..training.seqmodel import NOT_SETTINGS, SeqConfig
from ..training.seqranker import CANDIDATES, fit_ranker, load_ranker, order_metrics, save_ranker
from ..training.seqtrain import Histories, fit, rank_metrics, user_vectors

ENCODER_INT8 = "encoder.onnx"  # the name the bundle ships to devices (server/bundle/model_artifacts.py)


def held_out(history, holdout: int = 2) -> tuple[Histories, Histories, np.ndarray, np.ndarray]:
    """(training histories, histories before the test product, validation targets, test targets); -1 = none.
    `history`: a training.history.History or a Histories. `holdout` 1: no test product (every user's last
    product picks the epoch, the rest is learnt from), for data whose test events are kept elsewhere."""
    full = history if isinstance(history, Histories) else Histories(history.seqs, history.types, history.times)
    if holdout == 1:
        val = np.array([s[-1] if len(s) >= 2 else -1 for s in full.rows], dtype=np.int64)
        return full.head(1), full, val, np.full(len(full), -1, dtype=np.int64)
    val = np.array([s[-2] if len(s) >= 3 else -1 for s in full.rows], dtype=np.int64)
    test = np.array([s[-1] if len(s) >= 3 else -1 for s in full.rows], dtype=np.int64)
    return full.head(2), full.head(1), val, test


def save_model(m, vocab: ContentVocab, out, meta: dict, trained: np.ndarray | None = None
               ) -> tuple[ContentTower, np.ndarray, dict | None]:
    """The model (weights, config, metadata) beside its content tower; returns (tower, item vectors to
    publish, the content map's fit or None).

    `trained`: a boolean mask of the rows training saw (None: every row). With `content_ridge` > 0 (the
    default) the tower is the content map fitted to those rows' vectors (tokens no fitted product carries
    keep the trained tower's row), else the trained tower. A row training never saw has an untrained id
    part, so it is published with its content vector, as a product added since training is."""
    with torch.no_grad():
        vecs = m.item_vectors().numpy().copy()
        tokens = m.item_tokens.numpy()[1:]
        trained_table, proj = m.token.weight.numpy().copy(), m.content_proj.weight.numpy().copy()
    tower, fit = ContentTower(vocab, trained_table, proj), None
    rows = np.ones(len(vecs), bool) if trained is None else np.asarray(trained, bool)
    if m.config.content_ridge > 0:
        got = fit_content_map(tokens[rows], vecs[rows], len(vocab), float(m.config.content_ridge))
        if got is not None:
            table, supported, fit = got
            table[~supported] = trained_table[~supported] @ proj.T
            tower = ContentTower(vocab, table, np.eye(vecs.shape[1], dtype=np.float32))
            meta = {**meta, "content_map": fit}
    if not rows.all():
        guess = content_vectors(tokens[~rows], tower.table, tower.projection)
        known = np.isfinite(guess).all(axis=1)
        vecs[np.flatnonzero(~rows)[known]] = guess[known]
    seqmodel.save(m, out, meta)
    tower.save(out)
    return tower, vecs, fit


def trained_rows(h: Histories, n_items: int) -> np.ndarray:
    """The rows (0-based) a training run's histories hold: the products whose vectors it learnt."""
    seen = np.zeros(n_items, bool)
    for r in h.rows:
        seen[r] = True
    return seen


def train_sequence_job(home: Home, epochs: int | None = None, seed: int = 42, progress: bool = True,
                       since: float | None = None, until: float | None = None,
                       settings: dict | None = None, holdout: int = 2, tune_trials: int = 0, ray_workers: int = 0,
                       ray_address: str | None = None) -> dict:
    if holdout not in (1, 2):
        raise ModelError(f"holdout must be 1 or 2 products per user, not {holdout}")
    if settings:  # checked now, not after a study or a training run
        unknown = sorted(set(settings) - ({f.name for f in dataclasses.fields(SeqConfig)} - NOT_SETTINGS))
        if unknown:
            raise ModelError(f"not sequence-model settings: {', '.join(unknown)}")
        SeqConfig(n_items=1, **settings)
    store = home.store()
    history = load_history(store, since, until)
    catalogue = store.items()
    by_index = {it.item_id: it for it in catalogue}
    vocab = ContentVocab.build(by_index[int(i)] for i in history.item_index if int(i) in by_index)
    tokens = vocab.matrix([by_index.get(int(i)) for i in history.item_index])
    train, before_test, val, test = held_out(history, holdout)
    tuning = None
    if tune_trials > 0:
        from ..training.tuning import tune

        # What the user set (a budget, a rate) every trial runs with; the study picks the rest for that recipe.
        fixed = {**(settings or {}), **({"epochs": epochs} if epochs is not None else {})}
        tuning = tune(train, history.n_items, tokens, len(vocab), tune_trials, seed,
                      log=(lambda line: print(line, flush=True)) if progress else None, fixed=fixed)
        settings = {**tuning["settings"], **(settings or {})}
    config = SeqConfig(n_items=history.n_items, n_tokens=len(vocab), seed=seed, **(settings or {}))
    if epochs is not None:
        config.epochs = epochs
    if ray_workers > 0:
        from ..training.ray_train import fit_on_ray

        address = ray_address or (home.config or Config.from_env(home=home.root)).ray_address or "local"
        result = fit_on_ray(train, config, tokens, (train, val), ray_workers, address, home.root / "ray_train")
    else:
        result = fit(train, config, tokens, val=(train, val), progress=progress)
    m = result.model
    evaluation = {"val": {"retrieval": rank_metrics(m, train, val)},
                  "test": {"retrieval": rank_metrics(m, before_test, test)}}
    ranked = fit_ranker(m, train, (train, val), seed, config.ranker,
                        log=(lambda line: print(line, flush=True)) if progress else None)
    if ranked.trained is not None:
        tested = order_metrics(m, ranked.trained, before_test, test)["ranker"]
        if ranked.ranker is not None:  # what the server answers: retrieval's candidates in the ranker's order
            evaluation["val"]["ranker"] = ranked.report["val"]["ranker"]
            evaluation["test"]["ranker"] = tested
        else:  # recorded, not used: what the gate turned down would have given
            ranked.report["test_not_shipped"] = tested

    digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in m.parameters())).hexdigest()
    version = time.strftime("m%Y%m%d-%H%M%S-", time.gmtime()) + digest[:6]
    out = home.model_dir(version)
    metrics = {"train_seconds": result.seconds, "ray_workers": ray_workers, "best_epoch": result.best_epoch, "history": result.history,
               "evaluation": evaluation, "losses": [row["loss"] for row in result.history],
               "protocol": "the store's events, temporal leave-last-out, full ranking, k=10",
               "data": {"events": history.events, "users": len(history.user_ids), "items": history.n_items,
                        "from": history.first_ts, "to": history.last_ts},
               "config": config.to_dict(), "ranker_kind": ranked.report["kind"], "ranker": ranked.report,
               "tuning": tuning}
    tower, vecs, metrics["content_map"] = save_model(m, vocab, out, {"model_version": version,
                                                                     "item_ids": history.item_index.tolist()},
                                                     trained=trained_rows(train, history.n_items))
    if ranked.ranker is not None:
        save_ranker(ranked.ranker, out)
    home.write_json(out / "metrics.json", metrics)

    by_id = {int(i): vecs[k] for k, i in enumerate(history.item_index)}
    store.put_items([it for it in catalogue if it.item_id in by_id], by_id)
    unseen = [it for it in catalogue if it.item_id not in by_id]
    if unseen:
        # Content only, as training's id dropout taught the tower; a product with no known token
        # gets the catalogue's estimate from its category and title neighbours.
        trained = Catalogue(history.item_index, vecs, {i: by_index[i].in_stock for i in by_id if i in by_index},
                            {i: by_index[i].category for i in by_id if i in by_index}, frozenset(),
                            {i: by_index[i].title for i in by_id if i in by_index})
        guesses = {}
        for it in unseen:
            v = tower.vector(it)
            guesses[it.item_id] = v if v is not None else provisional_vector(it, trained)
        store.put_items(unseen, guesses, provisional=list(guesses))
        by_id.update(guesses)
    save_vectors(out, np.array(list(by_id), dtype=np.int64), np.stack(list(by_id.values())))
    users = rebuild_states(store, by_id, {it.item_id: it.title for it in catalogue}, config.dim)
    store.set_meta("current_model", version)
    return {"model_version": version, "users": users, "provisional_items": len(unseen), **metrics}


def export_sequence_job(home: Home, version: str, n_users: int | None = None) -> dict:
    """The encoder (fp32 for the server, int8 for the device) and the ranker (the learned one if training shipped
    it, else retrieval order), with parity figures."""
    from pocketrank.exporter.parity import check_parity
    from pocketrank.exporter.sequence_parity import check_sequence_parity

    out = home.model_dir(version)
    m, meta = seqmodel.load(out)
    c = m.config
    if len(meta.get("item_ids", [])) != c.n_items:
        raise ModelError(f"model {version} has {c.n_items} items but its metadata names {len(meta.get('item_ids', []))}")
    learned = load_ranker(out)
    if learned is not None and learned.dim != c.dim:
        raise ModelError(f"model {version}'s ranker takes {learned.dim}-d vectors, its encoder gives {c.dim}-d")
    ranker = (export_retrieval_ranker(out / "ranker.fp32.onnx", out / "ranker.int8.onnx", c.dim) if learned is None
              else export_learned_ranker(learned, out / "ranker.fp32.onnx", out / "ranker.int8.onnx", c.dim))
    enc = export_sequence_encoder(m.encoder, out / ENCODER_FP32, out / ENCODER_INT8, c.dim, c.max_len)
    # Gate users: each one's history before their last product, in the model's rows (products the model
    # never saw, trained on a window or new since, are left out, as the server leaves out unknown ones).
    history = load_history(home.store())
    row_of = {int(i): r for r, i in enumerate(meta["item_ids"])}
    remap = np.array([row_of.get(int(i), -1) for i in history.item_index], dtype=np.int64)
    rows = [remap[s] for s in history.seqs]
    # Left out, a product can leave two events of one product side by side: they are then one event (its
    # newest), as pocketrank.shared.sequence.kept_events makes them for the ONNX feed the server and device build.
    keep = [_last_of_runs(r) for r in rows]
    hist = Histories([r[k] for r, k in zip(rows, keep)], [t[k] for t, k in zip(history.types, keep)],
                     [t[k] for t, k in zip(history.times, keep)])
    _train, before_test, _val, test = held_out(hist)
    with torch.no_grad():
        items = m.item_vectors().numpy()
    parity = check_sequence_parity(
        lambda users: user_vectors(m, before_test, users), items, out / ENCODER_FP32, out / ENCODER_INT8,
        list(zip(before_test.rows, before_test.types, before_test.times)), test, c.max_len,
        n_users=n_users or 600)
    ranker_parity, fallback = None, None
    if learned is not None:
        try:
            ranker_parity = check_parity(learned, out / "ranker.fp32.onnx", out / "ranker.int8.onnx",
                                         ranker_gate_users(m, before_test, test, items, RANKER_GATE_USERS),
                                         RANKER_GATES).to_dict()
        except ModelError as e:
            if c.ranker == "learned":  # asked for: no silent substitute
                raise ModelError(f"{e} (the learned ranker; `train --ranker auto` falls back to retrieval order)") from e
            # Chosen by validation only: the device must rank as the server does, so both rank by retrieval.
            fallback = f"the learned ranker failed its int8 parity gate, retrieval order ships: {e}"
            ranker = export_retrieval_ranker(out / "ranker.fp32.onnx", out / "ranker.int8.onnx", c.dim)
    result = {"model_version": version, **ranker, "kind": "sequence", "ranker_kind": ranker["kind"],
              "quantization": {"method": {"ranker": ranker.get("quantization", "none (the retrieval score has no "
                                                                                  "weights)"),
                                          "encoder": enc["quantization"]}},
              "encoder": {**enc, "parity": parity}, "parity": parity, "ranker_parity": ranker_parity,
              **({"ranker_fallback": fallback} if fallback else {}),
              "bytes": {"torch_state": (out / "model.pt").stat().st_size,
                        "fp32_onnx": (out / "ranker.fp32.onnx").stat().st_size,
                        "int8_onnx": (out / "ranker.int8.onnx").stat().st_size,
                        "encoder_fp32_onnx": (out / ENCODER_FP32).stat().st_size,
                        "encoder_onnx": (out / ENCODER_INT8).stat().st_size}}
    home.write_json(out / "export.json", result)
    return result


# The learned ranker's int8 gates: the click model's, with the nDCG@10 the device keeps at the encoder's 0.98
# (exporter/sequence_parity.py). Its int8 scores keep the order (top-10 overlap 0.997, Kendall's tau 0.998 on
# MovieLens-100k), but with one target per user a few hits moving in or out of the top 10 make 1% on 600 users.
RANKER_GATES = {**INT8_GATES, "int8_ndcg10_drop_rel": (0.02, "max")}
RANKER_GATE_USERS = 5_000  # candidates for every one of them cost seconds: as many as the data has, to this


def ranker_gate_users(m, h: Histories, targets: np.ndarray, items: np.ndarray, n_users: int, seed: int = 0):
    """The ranker's parity users (exporter/parity.HeldOut): up to n_users with a target, each one's training
    user vector, retrieval's candidates for it (the history left out) and which of them came next."""
    from pocketrank.exporter.parity import HeldOut

    users = [int(u) for u in np.random.default_rng(seed).permutation(len(h)) if targets[u] >= 0][:n_users]
    if not users:
        raise ModelError("no user to judge the ranker's parity on (every history is shorter than three products)")
    vecs = user_vectors(m, h, users)
    cands, labels = [], []
    for u, v in zip(users, vecs):
        s = items @ v
        s[h.rows[u]] = -np.inf
        top = np.argsort(-s, kind="stable")[:CANDIDATES]
        top = top[np.isfinite(s[top])]  # a catalogue smaller than the history and CANDIDATES together
        cands.append(items[top])
        labels.append(top == targets[u])
    keep = [j for j, c in enumerate(cands) if len(c)]
    return HeldOut(vecs[keep], [cands[j] for j in keep], [labels[j] for j in keep])


def _last_of_runs(rows: np.ndarray) -> np.ndarray:
    """Mask of the known rows (>= 0) that enter the encoder: of a run on one product, its last."""
    known = np.flatnonzero(rows >= 0)
    keep = np.zeros(len(rows), dtype=bool)
    r = rows[known]
    last = np.ones(len(r), dtype=bool)
    last[:-1] = r[1:] != r[:-1]
    keep[known[last]] = True
    return keep
