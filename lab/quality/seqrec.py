"""A causal self-attention user tower (SASRec-style) trained with full softmax.

The user embedding is the transformer's output at the newest event: a
function of the event sequence, so a real-time update is re-running the tower
on the newest events, and the same function exports to ONNX (fixed-length
input, padding on the left). With ~1.7k items a full softmax is cheaper than
sampling and has no sampling bias, so there is no popularity correction to tune.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pocketrank.server.training.ranking_metrics import ndcg_at_k


@dataclass
class SeqConfig:
    n_items: int
    dim: int = 64
    layers: int = 2
    heads: int = 2
    max_len: int = 50
    dropout: float = 0.3
    lr: float = 2e-3
    weight_decay: float = 0.0
    batch_size: int = 128
    epochs: int = 60
    patience: int = 8  # epochs without a validation gain before stopping
    eval_every: int = 2
    seed: int = 42

    def to_dict(self) -> dict:
        return asdict(self)


class SeqTower(nn.Module):
    def __init__(self, c: SeqConfig):
        super().__init__()
        self.c = c
        self.item = nn.Embedding(c.n_items + 1, c.dim, padding_idx=0)
        self.pos = nn.Embedding(c.max_len, c.dim)
        layer = nn.TransformerEncoderLayer(c.dim, c.heads, dim_feedforward=c.dim, dropout=c.dropout,
                                           batch_first=True, norm_first=True, activation="gelu")
        self.enc = nn.TransformerEncoder(layer, c.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(c.dim)
        self.drop = nn.Dropout(c.dropout)
        nn.init.normal_(self.item.weight, std=0.05)
        causal = torch.triu(torch.ones(c.max_len, c.max_len, dtype=torch.bool), diagonal=1)
        self.register_buffer("causal", causal, persistent=False)

    def hidden(self, seq: torch.Tensor) -> torch.Tensor:
        """(B, L) 1-based item rows, 0 = padding on the left -> (B, L, dim) states."""
        L = seq.shape[1]
        x = self.item(seq) * (self.c.dim ** 0.5) + self.pos.weight[-L:][None]
        x = self.drop(x) * (seq > 0).unsqueeze(-1)
        h = self.enc(x, mask=self.causal[-L:, -L:], is_causal=True)
        return self.norm(h)

    def item_table(self) -> torch.Tensor:
        return self.item.weight[1:]

    def user_vectors(self, seq: torch.Tensor) -> torch.Tensor:
        return self.hidden(seq)[:, -1]


def left_pad(seqs: list[np.ndarray], length: int) -> np.ndarray:
    """The last `length` items of each sequence as 1-based rows, left-padded with 0."""
    out = np.zeros((len(seqs), length), dtype=np.int64)
    for r, s in enumerate(seqs):
        tail = s[-length:]
        if len(tail):
            out[r, length - len(tail):] = tail + 1
    return out


def windows(seqs: list[np.ndarray], length: int) -> tuple[np.ndarray, np.ndarray]:
    """Training windows: inputs (N, L) and next-item targets (N, L), 0 = no target.

    Long histories are cut from the end into windows of length+1 so every
    event is predicted once per epoch with up to `length` events of context.
    """
    xs, ys = [], []
    for s in seqs:
        s = np.asarray(s) + 1
        end = len(s)
        while end >= 2:
            chunk = s[max(0, end - length - 1) : end]
            x, y = np.zeros(length, np.int64), np.zeros(length, np.int64)
            x[length - len(chunk) + 1 :] = chunk[:-1]
            y[length - len(chunk) + 1 :] = chunk[1:]
            xs.append(x)
            ys.append(y)
            end -= length
    return np.stack(xs), np.stack(ys)


@torch.no_grad()
def score(model: SeqTower, histories: list[np.ndarray], batch: int = 512) -> np.ndarray:
    """Full-catalogue scores (U, n_items) for each history."""
    model.eval()
    table = model.item_table()
    out = []
    for lo in range(0, len(histories), batch):
        x = torch.from_numpy(left_pad(histories[lo : lo + batch], model.c.max_len))
        out.append((model.user_vectors(x) @ table.T).numpy())
    return np.concatenate(out) if out else np.zeros((0, model.c.n_items), np.float32)


def fit(train_seqs: list[np.ndarray], c: SeqConfig, val: tuple[list[np.ndarray], np.ndarray] | None = None,
        log=None) -> tuple[SeqTower, dict]:
    """Train; with `val` = (histories, next items), early-stop on validation nDCG@10.

    Returns the best model (by validation nDCG@10, or the last one without val) and a report.
    """
    from .beyond import top_k

    torch.manual_seed(c.seed)
    rng = np.random.default_rng(c.seed)
    X, Y = windows(train_seqs, c.max_len)
    X_t, Y_t = torch.from_numpy(X), torch.from_numpy(Y)
    model = SeqTower(c)
    opt = torch.optim.AdamW(model.parameters(), lr=c.lr, weight_decay=c.weight_decay)
    best, best_state, best_epoch, history = -1.0, None, 0, []
    start = time.perf_counter()
    for epoch in range(1, c.epochs + 1):
        model.train()
        perm = torch.from_numpy(rng.permutation(len(X)))
        total = 0.0
        for lo in range(0, len(X), c.batch_size):
            b = perm[lo : lo + c.batch_size]
            h = model.hidden(X_t[b])
            y = Y_t[b]
            keep = y > 0
            logits = h[keep] @ model.item_table().T
            loss = F.cross_entropy(logits, y[keep] - 1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(b)
        row = {"epoch": epoch, "loss": total / len(X)}
        if val is not None and (epoch % c.eval_every == 0 or epoch == c.epochs):
            hist, target = val
            s = score(model, hist)
            for r, h_ in enumerate(hist):
                s[r, h_] = -np.inf
            top = top_k(s, 10)
            hit = (top == target[:, None]).any(1)
            ndcg = float(np.mean([ndcg_at_k(t.tolist(), {y}, 10) for t, y in zip(top, target.tolist())]))
            row.update({"val_nDCG@10": ndcg, "val_HR@10": float(hit.mean())})
            if ndcg > best:
                best, best_epoch = ndcg, epoch
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            elif epoch - best_epoch >= c.patience:
                history.append(row)
                break
        history.append(row)
        if log:
            log(row)
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return model, {"best_epoch": best_epoch or c.epochs, "best_val_nDCG@10": best,
                   "seconds": time.perf_counter() - start, "history": history}
