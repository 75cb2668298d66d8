"""Batch jobs behind `pocketrank train` and `pocketrank export`."""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict

import numpy as np

from pocketrank.exporter.onnx_export import export_encoder, export_ranker
from pocketrank.exporter.parity import HeldOut, check_encoder, check_parity
from pocketrank.exporter.quantize import quantize_ranker
from pocketrank.shared.errors import ModelError

from ..home import Home
from ..online.catalogue import Catalogue, provisional_vector
from ..online.encoding import model_kind
from ..online.fold import rebuild_states
from ..training import model as model_io
from ..training.evaluate import evaluate_last_item, pooled_user
from ..training.history import load_history
from ..training.model import ModelConfig
from ..training.sequences import split_last_two
from ..training.train import train

MODEL_KINDS = ("sequence", "fold")


def train_settings(lr_schedule: str | None = None, lr: float | None = None, ranker: str | None = None) -> dict:
    """The sequence-model settings `train --lr-schedule / --lr / --ranker` give (those not left to the default)."""
    return {k: v for k, v in (("lr_schedule", lr_schedule), ("lr", lr), ("ranker", ranker)) if v is not None}


def train_job(home: Home, epochs: int | None = None, seed: int = 42, progress: bool = True,
              since: float | None = None, until: float | None = None, kind: str = "sequence",
              settings: dict | None = None, holdout: int = 2, tune_trials: int = 0, ray_workers: int = 0,
              ray_address: str | None = None) -> dict:
    """Train on whatever the store holds (all but each user's last two products), evaluate, refold every user.

    `kind`: "sequence" (server/training/seqmodel.py, early-stopped on validation; `epochs` caps it)
    or "fold" (the decayed-mean user tower and click model, `epochs` of 8 by default).

    `since`/`until` (unix seconds) limit the events learnt from. Products the window
    never saw keep a content-only (provisional) vector from their title and category,
    as a product added through the API does, until a training run sees them.

    `ray_workers` > 0 (the sequence model only) trains data-parallel on that many Ray Train workers
    (server/training/ray_train.py) on `ray_address` (default: the ray_address setting, else "local").
    """
    if kind == "sequence":
        from .sequence import train_sequence_job

        return train_sequence_job(home, epochs, seed, progress, since, until, settings, holdout, tune_trials,
                                  ray_workers, ray_address)
    if ray_workers:
        raise ModelError("training on Ray workers is for the sequence model (--model sequence)")
    if settings:  # the fold model has its own config; silently ignoring a setting would hide a typo'd kind
        raise ModelError(f"settings ({', '.join(sorted(settings))}) are for the sequence model (--model sequence, kind='sequence')")
    if kind != "fold":
        raise ModelError(f"model kind must be one of {', '.join(MODEL_KINDS)}, not {kind!r}")
    store = home.store()
    history = load_history(store, since, until)
    split = split_last_two(history.seqs)
    config = ModelConfig(n_items=history.n_items, epochs=8 if epochs is None else epochs, seed=seed)
    result = train(split.train, config, progress=progress)
    m = result.model
    evaluation = {"val": evaluate_last_item(m, split, "val"), "test": evaluate_last_item(m, split, "test")}

    digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in m.parameters())).hexdigest()
    version = time.strftime("m%Y%m%d-%H%M%S-", time.gmtime()) + digest[:6]
    out = home.model_dir(version)
    metrics = {"train_seconds": result.seconds, "losses": result.losses, "evaluation": evaluation,
               "protocol": "the store's events, temporal leave-last-out, full ranking, k=10",
               "data": {"events": history.events, "users": len(history.user_ids), "items": history.n_items,
                        "from": history.first_ts, "to": history.last_ts},
               "config": asdict(config)}
    model_io.save(m, out, {"model_version": version, "item_ids": history.item_index.tolist()})
    home.write_json(out / "metrics.json", metrics)

    # Every user's online state is refolded from the whole log with the new vectors, so every
    # known user has a state the moment the server starts.
    vecs = m.item_vectors().detach().numpy()
    by_id = {int(i): vecs[k] for k, i in enumerate(history.item_index)}
    catalogue = store.items()
    store.put_items([it for it in catalogue if it.item_id in by_id], by_id)
    unseen = [it for it in catalogue if it.item_id not in by_id]
    if unseen:
        # Estimated from this model's vectors only: a vector an earlier model left is in another space.
        meta = {it.item_id: it for it in catalogue}
        trained = Catalogue(history.item_index, vecs, {i: meta[i].in_stock for i in by_id if i in meta},
                            {i: meta[i].category for i in by_id if i in meta}, frozenset(),
                            {i: meta[i].title for i in by_id if i in meta})
        guesses = {it.item_id: provisional_vector(it, trained) for it in unseen}
        store.put_items(unseen, guesses, provisional=list(guesses))
        by_id.update(guesses)
    users = rebuild_states(store, by_id, {it.item_id: it.title for it in catalogue}, config.dim)
    store.set_meta("current_model", version)
    return {"model_version": version, "users": users, "provisional_items": len(unseen), **metrics}


def export_inputs(m, store, n_candidates: int = 200, seed: int = 0, since: float | None = None,
                  until: float | None = None, item_ids=None) -> tuple[HeldOut, HeldOut, list]:
    """Real inputs for the exporter from the store's log: (calibration, gate queries, gate users' event sequences).

    `item_ids`: the store index of each of the model's rows (its metadata's `item_ids`); the log's
    products are mapped through it and those the model never saw (trained on a window, or new since)
    are left out of the histories. None: the model's rows are the log's products, in index order.

    Users are split at random into two disjoint groups, a third for
    calibration and the rest for the gates. A calibration user is pooled from
    the training prefix, the distribution the model was trained on. Each gate
    user asks two queries the model never trained on: the history before the
    second-to-last event, labelled with that event, and the history before the
    last one, labelled with it. Two per user because the relative nDCG gate is
    decided by the few users whose next item sits near rank 10. A label that
    retrieval missed replaces the weakest candidate, so every query says
    something about the order. Candidates are the top `n_candidates` by inner
    product with the history excluded, as the server retrieves them.
    """
    vecs = m.item_vectors().detach().numpy()
    history = load_history(store, since, until)
    seqs = history.seqs
    if item_ids is not None:
        row_of = {int(i): r for r, i in enumerate(item_ids)}
        remap = np.array([row_of.get(int(i), -1) for i in history.item_index], dtype=np.int64)
        seqs = [rows[rows >= 0] for rows in (remap[s] for s in history.seqs)]
    split = split_last_two(seqs)
    users = np.random.default_rng(seed).permutation(len(split.train))
    calib_users, gate_users = users[: len(users) // 3], users[len(users) // 3 :]

    def query(hist: np.ndarray, label: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        uv = pooled_user(vecs, hist, m.config.history)
        s = vecs @ uv
        s[hist] = -np.inf
        top = np.argsort(-s, kind="stable")[:n_candidates]
        if label >= 0 and label not in top:
            top[-1] = label
        return uv, vecs[top], top == label

    calib = [query(split.train[u], -1) for u in calib_users]
    gate, sequences = [], []
    for u in gate_users:
        if split.test[u] < 0:
            continue
        hist = np.append(split.train[u], split.val[u])
        gate += [query(split.train[u], split.val[u]), query(hist, split.test[u])]
        sequences.append((vecs[hist], ["click"] * len(hist)))

    def held(rows: list) -> HeldOut:
        return HeldOut(np.stack([r[0] for r in rows]), [r[1] for r in rows], [r[2] for r in rows])

    return held(calib), held(gate), sequences


def export_job(home: Home, n_users: int | None = None, n_candidates: int = 200, version: str | None = None,
               inputs: tuple[HeldOut, HeldOut, list] | None = None) -> dict:
    """fp32 and int8 ONNX ranker and the fp32 user encoder, each step gated.

    The ranker's export must match torch and its int8 version must keep the
    fp32 ranking on held-out users (pocketrank.exporter.parity); the encoder must match
    pocketrank.shared.features' fold on the same users' real event sequences. `n_users`
    caps the gate users (default: all of them, about 630 users asking 1,260
    queries; the relative nDCG gate needs that many to be steadier than one
    user's hit moving a rank). `version` exports another model than the
    current one and `inputs` replaces the gate inputs drawn from the store (export_inputs'
    shape): `pocketrank retrain` gates a candidate on its own hold-out.
    """
    version = version or home.current_model(home.store())
    out = home.model_dir(version)
    if model_kind(out) == "sequence":
        if inputs is not None:
            raise ModelError(f"model {version} is a sequence model; its gates read the store's log, not `inputs`")
        from .sequence import export_sequence_job

        return export_sequence_job(home, version, n_users)
    m, _meta = model_io.load(out)
    dim = m.config.dim
    fp32, int8, encoder = out / "ranker.fp32.onnx", out / "ranker.int8.onnx", out / "encoder.onnx"
    info = export_ranker(m.click, fp32, dim)
    quant = quantize_ranker(fp32, int8)
    enc_info = export_encoder(encoder, dim)

    if inputs is None and len(m_items := _meta.get("item_ids", [])) != m.config.n_items:
        raise ModelError(f"model {version} has {m.config.n_items} items but its metadata names {len(m_items)}")
    _calib, gate, sequences = inputs if inputs is not None else export_inputs(
        m, home.store(), n_candidates, item_ids=_meta["item_ids"])
    if n_users is not None:
        q = 2 * n_users
        gate = HeldOut(gate.users[:q], gate.candidates[:q], gate.labels[:q])
        sequences = sequences[:n_users]
    report = check_parity(m.click, fp32, int8, gate)
    enc_parity = check_encoder(encoder, sequences, dim)
    result = {"model_version": version, **info, "quantization": quant, "parity": report.to_dict(),
              "encoder": {**enc_info, "parity": enc_parity},
              "bytes": {"torch_state": (out / "model.pt").stat().st_size, "fp32_onnx": fp32.stat().st_size,
                        "int8_onnx": int8.stat().st_size, "encoder_onnx": encoder.stat().st_size}}
    home.write_json(out / "export.json", result)
    return result
