"""Bring your own data: train on a user_id,item_id,timestamp CSV, recommend to a list of users.

The model is the hybrid measured in docs/benchmarks.md: the DLAE item-item
scorer plus the causal self-attention tower over each user's time-ordered
history: z(tower) + linear_weight * z(DLAE), per-user z-scores, the blend of
protocol 2 (its weight chosen on validation). With `--seq-epochs 0` it is DLAE alone. Users unknown to the model get
popularity. Items a user already has in the training file are never recommended.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from pocketrank.shared.errors import DataError, ModelError

from . import beyond
from .data import read_csv, time_sorted_sequences
from .defaults import DEFAULTS
from .hybrid import DLAE
from .peers import binary_matrix
from .seqrec import SeqConfig, SeqTower, fit as fit_seq, score as seq_score


def _z(s: np.ndarray) -> np.ndarray:
    return (s - s.mean(1, keepdims=True)) / (s.std(1, keepdims=True) + 1e-9)


def train(interactions: Path, out: Path, seq_epochs: int | None = None, linear_weight: float | None = None,
          seed: int = 42) -> dict:
    torch.manual_seed(seed)
    start = time.perf_counter()
    data = read_csv(interactions)
    seqs = time_sorted_sequences(data)
    X = binary_matrix(data.users, data.items, data.n_users, data.n_items)
    dlae = DLAE(DEFAULTS["dlae_lambda"], DEFAULTS["dlae_p"]).fit(X)
    seq_kw = dict(DEFAULTS["seq"])
    if seq_epochs is not None:
        seq_kw["epochs"] = seq_epochs
    if linear_weight is None:
        linear_weight = DEFAULTS["p2_linear_weight"]
    config = {"dlae_lambda": dlae.lam, "dlae_p": dlae.p, "seq": seq_kw, "linear_weight": linear_weight, "seed": seed}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "dlae_B.npy", dlae.B)
    sp.save_npz(out / "history.npz", X)
    if seq_kw["epochs"] > 0:
        tower, report = fit_seq(seqs, SeqConfig(n_items=data.n_items, seed=seed, **seq_kw))
        torch.save(tower.state_dict(), out / "seq.pt")
    (out / "model.json").write_text(json.dumps({
        "kind": "pocketrank-byo", "config": config, "user_ids": data.user_ids.tolist(),
        "item_ids": data.item_ids.tolist(), "interactions": len(data), "source": str(interactions)}))
    # Sequences are needed at recommendation time (the tower reads the newest events).
    np.save(out / "sequences.npy", np.array([np.asarray(s, np.int64) for s in seqs], dtype=object),
            allow_pickle=True)
    return {"users": data.n_users, "items": data.n_items, "interactions": len(data),
            "seconds": time.perf_counter() - start, "config": config, "out": str(out)}


def recommend(model_dir: Path, users_file: Path, k: int, out: Path) -> int:
    model_dir = Path(model_dir)
    try:
        meta = json.loads((model_dir / "model.json").read_text())
        B = np.load(model_dir / "dlae_B.npy")
        X = sp.load_npz(model_dir / "history.npz").tocsr()
        seqs = list(np.load(model_dir / "sequences.npy", allow_pickle=True))
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"{model_dir} is not a model from `pocketrank train --interactions`: {exc}") from exc
    try:
        wanted = [line.strip() for line in Path(users_file).read_text().splitlines() if line.strip()]
    except OSError as exc:
        raise DataError(f"cannot read users file {users_file}: {exc}") from exc
    if wanted and wanted[0] == "user_id":
        wanted = wanted[1:]
    cfg = meta["config"]
    index = {u: i for i, u in enumerate(meta["user_ids"])}
    item_ids = meta["item_ids"]
    tower = None
    if (model_dir / "seq.pt").exists():
        tower = SeqTower(SeqConfig(n_items=len(item_ids), seed=cfg["seed"], **cfg["seq"]))
        tower.load_state_dict(torch.load(model_dir / "seq.pt", weights_only=True))
        tower.eval()
    pop = np.asarray(X.sum(0)).ravel().astype(np.float32)
    known = [u for u in wanted if u in index]
    rows = np.array([index[u] for u in known], dtype=np.int64)
    k = min(k, len(item_ids))
    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["user_id", "item_id", "rank", "score"])
        results: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for lo in range(0, len(rows), 256):
            r = rows[lo : lo + 256]
            s = _z(np.asarray(X[r] @ B))
            if tower is not None:
                s = _z(seq_score(tower, [seqs[i] for i in r])) + cfg["linear_weight"] * s
            hist = X[r].nonzero()
            s[hist] = -np.inf
            top = beyond.top_k(s, k)
            for j, u in enumerate(known[lo : lo + 256]):
                results[u] = (top[j], s[j, top[j]])
        cold = pop.copy()
        cold_top = np.argsort(-cold, kind="stable")[:k]
        for u in wanted:
            top, sc = results.get(u, (cold_top, cold[cold_top]))
            for rank, (i, v) in enumerate(zip(top, sc), start=1):
                if np.isfinite(v):
                    w.writerow([u, item_ids[int(i)], rank, f"{float(v):.6f}"])
    return len(wanted)
