"""Training the sequence model: next-product prediction at every position of every history.

Each user's history (model rows, event types, times; oldest first) is cut
from its end into windows of `max_len + 1` events, so every event is a
target once per epoch with up to `max_len` events of context. The loss is
cross-entropy over the whole catalogue (no sampling bias, nothing to
correct) up to `full_softmax_max` products; above it, a sampled softmax over
`negatives` products drawn by popularity, shared by the batch, with the logQ
correction (each logit minus the log of its sampling probability) so that
popular products are not over-penalised for being drawn more often.

Early stopping: every `eval_every` epochs the model ranks each user's
validation product (the one before the held-out test product) over the full
catalogue; training stops after `patience` evaluations without a gain and
keeps the best epoch's weights.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from pocketrank.shared.errors import DataError
from pocketrank.shared.sequence import gap_buckets

from .ranking_metrics import ndcg_at_k
from .seqmodel import SeqConfig, SequenceRecommender
from .softmax_loss import softmax_cross_entropy


@dataclass
class Histories:
    """Per user, oldest first: model rows (0-based), TYPE_CODEs and timestamps."""

    rows: list[np.ndarray]
    types: list[np.ndarray]
    times: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.rows)

    def head(self, drop: int) -> Histories:
        """Every history without its last `drop` events (histories too short keep what they have)."""
        cut = [max(len(r) - drop, 0) if len(r) > drop else len(r) for r in self.rows]
        return Histories([r[:c] for r, c in zip(self.rows, cut)], [t[:c] for t, c in zip(self.types, cut)],
                         [t[:c] for t, c in zip(self.times, cut)])


def padded(h: Histories, users, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Left-padded (U, length) 1-based rows, type codes + 1 and gap buckets of the users' last `length` events."""
    rows = np.zeros((len(users), length), np.int64)
    types, gaps = np.zeros_like(rows), np.zeros_like(rows)
    for k, u in enumerate(users):
        r, t, g = h.rows[u][-length:], h.types[u][-length:], gap_buckets(h.times[u])[-length:]
        if len(r):
            rows[k, length - len(r):] = r + 1
            types[k, length - len(r):] = t.astype(np.int64) + 1
            gaps[k, length - len(r):] = g
    return rows, types, gaps


def windows(h: Histories, length: int) -> tuple[np.ndarray, ...]:
    """Training windows: inputs (rows, types, gaps) and next-product targets, each (N, length); 0 = none."""
    xs, ts, gs, ys = [], [], [], []
    for r, t, tm in zip(h.rows, h.types, h.times):
        rows, codes, gaps = np.asarray(r) + 1, np.asarray(t, np.int64) + 1, gap_buckets(tm)
        end = len(rows)
        while end >= 2:
            lo = max(0, end - length - 1)
            m = end - lo - 1
            x, ty, g, y = (np.zeros(length, np.int64) for _ in range(4))
            x[length - m:], ty[length - m:], g[length - m:] = rows[lo:end - 1], codes[lo:end - 1], gaps[lo:end - 1]
            y[length - m:] = rows[lo + 1:end]
            xs.append(x)
            ts.append(ty)
            gs.append(g)
            ys.append(y)
            end -= length
    if not xs:
        raise DataError("nothing to learn from: no user has two products in a row to train on (each user's last "
                        "two are held out for evaluation); import more events or widen --window-days")
    return np.stack(xs), np.stack(ts), np.stack(gs), np.stack(ys)


@torch.no_grad()
def user_vectors(model: SequenceRecommender, h: Histories, users=None, batch: int = 512) -> np.ndarray:
    """(U, dim) user vectors of the given users' histories (all users when None)."""
    model.eval()
    users = np.arange(len(h)) if users is None else np.asarray(users)
    table = model.table()
    out = []
    for lo in range(0, len(users), batch):
        rows, types, gaps = (torch.from_numpy(a) for a in padded(h, users[lo:lo + batch], model.config.max_len))
        out.append(model.user_states(table, rows, types, gaps)[:, -1].numpy())
    return np.concatenate(out) if out else np.zeros((0, model.config.dim), np.float32)


def rank_metrics(model: SequenceRecommender, h: Histories, targets: np.ndarray, k: int = 10) -> dict:
    """HR@k and nDCG@k of each user's target over the full catalogue, the user's history excluded."""
    users = np.flatnonzero(targets >= 0)
    if len(users) == 0:
        return {"users": 0, f"HR@{k}": 0.0, f"nDCG@{k}": 0.0}
    items = model.item_vectors().detach().numpy()
    hits, ndcg = [], []
    for lo in range(0, len(users), 1024):
        us = users[lo:lo + 1024]
        s = user_vectors(model, h, us) @ items.T
        for j, u in enumerate(us):
            s[j, h.rows[u]] = -np.inf
        top = np.argpartition(-s, k, axis=1)[:, :k]
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(s, top, 1), 1, kind="stable"), 1)
        for row, u in zip(top, us):
            hits.append(targets[u] in row)
            ndcg.append(ndcg_at_k(row.tolist(), {int(targets[u])}, k))
    return {"users": int(len(users)), f"HR@{k}": float(np.mean(hits)), f"nDCG@{k}": float(np.mean(ndcg))}


@dataclass
class SeqTrainResult:
    model: SequenceRecommender
    seconds: float
    best_epoch: int
    history: list[dict]


class TrainStep(torch.nn.Module):
    """One forward of training: the item table (with id dropout) and every position's user state. A module of
    its own so that a data-parallel wrapper (DDP, through Ray Train) sees the forward and syncs gradients.

    With `rows` (sorted, unique table rows: a sampled softmax's inputs, targets and negatives), the table is
    those rows alone and `x` is read through them; the loss reads no other row, so the gradients are the
    full table's."""

    def __init__(self, model: SequenceRecommender):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, types: torch.Tensor, gaps: torch.Tensor, id_dropout: float,
                rows: torch.Tensor | None = None):
        table = self.model.table(id_dropout, rows)
        if rows is not None:
            x = torch.searchsorted(rows, x)
        return table, self.model.user_states(table, x, types, gaps)


def fit(train: Histories, c: SeqConfig, item_tokens: np.ndarray | None = None,
        val: tuple[Histories, np.ndarray] | None = None, progress: bool = True,
        log: Callable[[dict], None] | None = None, eval_every: int = 2, shard: tuple[int, int] = (0, 1),
        wrap: Callable[[torch.nn.Module], torch.nn.Module] | None = None) -> SeqTrainResult:
    """Train on `train`; with `val` = (histories, next product per user, -1 = none), stop early on its nDCG@10.

    Data-parallel (server/training/ray_train.py): `shard` = (rank, workers) trains on this worker's share of
    each epoch's shuffled windows, batches of batch_size / workers (gradients averaged over the workers make
    one batch of batch_size), and `wrap` makes the step module data-parallel. Every worker draws the same
    shuffle and stops at the same epoch (their weights are the same after each step)."""
    torch.manual_seed(c.seed)
    rng = np.random.default_rng(c.seed)
    X, T, G, Y = (torch.from_numpy(a) for a in windows(train, c.max_len))
    model = SequenceRecommender(c, item_tokens)
    step: torch.nn.Module = TrainStep(model)
    if wrap is not None:
        step = wrap(step)
    opt = torch.optim.AdamW(step.parameters(), lr=c.lr, weight_decay=c.weight_decay)
    sampled = c.n_items > c.full_softmax_max
    if sampled:
        counts = np.bincount(np.concatenate(train.rows), minlength=c.n_items).astype(np.float64) + 1.0
        q = torch.from_numpy(counts / counts.sum())
    best, best_state, best_epoch, history = -1.0, None, 0, []
    rank, workers = shard
    start, n = time.perf_counter(), len(X)
    local, batch = n // workers if workers > 1 else n, max(1, c.batch_size // workers)  # equal steps on every worker
    steps = (local + batch - 1) // batch
    # "linear": the rate falls to 0 at the last step. With a fixed budget of epochs, a decay to zero reaches
    # about what a constant rate reaches in several times the epochs (Li et al., "Budgeted training", 2020).
    sched = (torch.optim.lr_scheduler.LambdaLR(opt, lambda i: max(0.0, 1.0 - i / (c.epochs * steps)))
             if c.lr_schedule == "linear" else None)
    bar = tqdm(total=c.epochs * steps, desc="train", unit="batch", disable=not progress)
    for epoch in range(1, c.epochs + 1):
        step.train()
        order = rng.permutation(n)
        perm = torch.from_numpy(order[rank::workers][:local] if workers > 1 else order)
        total = 0.0
        for lo in range(0, local, batch):
            b = perm[lo:lo + batch]
            y = Y[b]
            keep = y > 0
            if not sampled:
                table, hid = step(X[b], T[b], G[b], c.id_dropout)
                loss = softmax_cross_entropy(hid[keep], table[1:], y[keep] - 1)
            else:
                neg = torch.multinomial(q, c.negatives, replacement=True)
                target = y[keep] - 1
                rows = torch.unique(torch.cat([X[b].flatten(), target + 1, neg + 1]))  # sorted
                table, hid = step(X[b], T[b], G[b], c.id_dropout, rows)
                h = hid[keep]
                pos = ((h * table[torch.searchsorted(rows, target + 1)]).sum(1, keepdim=True)
                       - torch.log(q[target]).float().unsqueeze(1))
                negl = h @ table[torch.searchsorted(rows, neg + 1)].T - torch.log(q[neg]).float().unsqueeze(0)
                negl = negl.masked_fill(neg.unsqueeze(0) == target.unsqueeze(1), -1e9)  # a target is not its own negative
                loss = F.cross_entropy(torch.cat([pos, negl], 1), torch.zeros(len(target), dtype=torch.long))
            opt.zero_grad()
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            total += float(loss.detach()) * len(b)
            bar.update(1)
        # "lr": the rate after the epoch's last step (what the next epoch starts at; 0 once linear is spent)
        row: dict = {"epoch": epoch, "loss": total / local, "lr": opt.param_groups[0]["lr"]}
        if val is not None and (epoch % eval_every == 0 or epoch == c.epochs):
            row.update({f"val_{k}": v for k, v in rank_metrics(model, val[0], val[1]).items() if k != "users"})
            if row["val_nDCG@10"] > best:
                best, best_epoch = row["val_nDCG@10"], epoch
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            elif c.lr_schedule == "constant" and epoch - best_epoch >= c.patience * eval_every:
                # A decaying rate runs its budget: its best epochs come late, as the rate falls.
                history.append(row)
                break
        history.append(row)
        bar.set_postfix(loss=f"{row['loss']:.3f}", **({"val_ndcg": f"{best:.4f}"} if best >= 0 else {}))
        if log:
            log(row)
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return SeqTrainResult(model, time.perf_counter() - start, best_epoch or c.epochs, history)
