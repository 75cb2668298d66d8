"""Batch jobs behind `pocketrank train` and `pocketrank export`."""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict

import numpy as np

from exporter.onnx_export import export_ranker
from exporter.parity import check_parity
from exporter.quantize import quantize_ranker
from shared.schemas import Event

from . import model as model_io
from .data import movielens
from .evaluate import leave_last_out, pooled_user
from .home import Home
from .model import ModelConfig
from .sequences import leave_last_out as split_last, user_sequences
from .train import train


def train_job(home: Home, epochs: int = 8, seed: int = 42, progress: bool = True) -> dict:
    """Train on MovieLens-100k (all but each user's last two events), evaluate, seed the store."""
    ml = movielens.load()
    seqs = user_sequences(ml.users, ml.items, ml.n_users)
    split = split_last(seqs)
    config = ModelConfig(n_items=ml.n_items, epochs=epochs, seed=seed)
    result = train(split.train, config, progress=progress)
    m = result.model
    evaluation = {"val": leave_last_out(m, split, "val"), "test": leave_last_out(m, split, "test")}

    digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in m.parameters())).hexdigest()
    version = time.strftime("m%Y%m%d-%H%M%S-", time.gmtime()) + digest[:6]
    out = home.model_dir(version)
    metrics = {"train_seconds": result.seconds, "losses": result.losses, "evaluation": evaluation,
               "protocol": "MovieLens-100k temporal leave-last-out, full ranking, k=10",
               "config": asdict(config)}
    model_io.save(m, out, {"model_version": version, "item_ids": ml.item_ids.tolist()})
    home.write_json(out / "metrics.json", metrics)

    # The online store starts from the same history the model saw, so every
    # known user has a state the moment the server starts.
    vecs = m.item_vectors().detach().numpy()
    by_id = {int(i): vecs[k] for k, i in enumerate(ml.item_ids)}
    store = home.store()
    store.put_items(ml.catalogue, by_id)
    store.import_events(
        Event(f"ml-{ml.user_ids[u]}-{ml.item_ids[i]}", str(ml.user_ids[u]), "movielens", "click",
              float(t), int(ml.item_ids[i]))
        for u, i, t in zip(ml.users, ml.items, ml.timestamps)
    )
    users = store.rebuild_states(by_id, {it.item_id: it.title for it in ml.catalogue}, config.dim)
    store.set_meta("current_model", version)
    return {"model_version": version, "users": users, **metrics}


def export_job(home: Home, n_users: int = 200, n_candidates: int = 200) -> dict:
    """fp32 and int8 ONNX of the current model, gated on parity with torch."""
    store = home.store()
    version = home.current_model(store)
    out = home.model_dir(version)
    m, meta = model_io.load(out)
    info = export_ranker(m.click, out / "ranker.fp32.onnx", m.config.dim)
    quant = quantize_ranker(out / "ranker.fp32.onnx", out / "ranker.int8.onnx")

    # Held-out inputs: real users' pooled states and their retrieval candidates.
    vecs = m.item_vectors().detach().numpy()
    ml = movielens.load()
    seqs = user_sequences(ml.users, ml.items, ml.n_users)
    rng = np.random.default_rng(0)
    users, cands = [], []
    for u in rng.choice(len(seqs), size=min(n_users, len(seqs)), replace=False):
        uv = pooled_user(vecs, seqs[u], m.config.history)
        users.append(uv)
        cands.append(vecs[np.argsort(-(vecs @ uv))[:n_candidates]])
    report = check_parity(m.click, out / "ranker.fp32.onnx", out / "ranker.int8.onnx", np.stack(users), cands)
    result = {"model_version": version, **info, "quantization": quant, "parity": report.to_dict(),
              "bytes": {"torch_state": (out / "model.pt").stat().st_size,
                        "fp32_onnx": (out / "ranker.fp32.onnx").stat().st_size,
                        "int8_onnx": (out / "ranker.int8.onnx").stat().st_size}}
    home.write_json(out / "export.json", result)
    return result
