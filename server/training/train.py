"""Training loop: in-batch softmax for retrieval plus BCE for the click model.

One pass optimises both heads over the shared item table:
- retrieval: the pooled user vector should score the next item above the other
  items in the batch (sampled softmax, logQ-corrected for popularity so popular
  items are not over-rewarded for appearing as negatives more often);
- click model: P(click) = 1 for the next item and 0 for items other users
  chose in the same batch (MovieLens has no impressions, so sampled negatives stand in
  for no-clicks; the simulator has real ones).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from pocketrank.shared.errors import DataError, ValidationError

from .model import ModelConfig, Recommender
from .sequences import training_examples


@dataclass
class TrainResult:
    model: Recommender
    seconds: float
    losses: list[float]


def _mean(loss: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
    return loss.mean() if w is None else (loss * w).sum() / w.sum().clamp_min(1e-12)


def train(train_seqs: list[np.ndarray], config: ModelConfig, progress: bool = True,
          sample_weights: list[np.ndarray] | None = None) -> TrainResult:
    """sample_weights: one per item of each sequence (pocketrank.server.jobs.retrain's recency weighting); an
    example's loss is weighted by its target's weight. None: every example counts the same."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    hist, weights, targets = training_examples(train_seqs, config.history)
    if len(targets) == 0:
        raise DataError("nothing to learn from: no user has two products in a row to train on (each user's last "
                        "two are held out for evaluation); import more events or widen --window-days")
    ex_w = None
    if sample_weights is not None:  # training_examples' rows: each sequence's targets s[1:], in order
        ex_w = torch.from_numpy(np.concatenate([np.zeros(0, np.float32)] + [
            np.asarray(w, dtype=np.float32)[1:] for w in sample_weights]))
        if len(sample_weights) != len(train_seqs) or ex_w.numel() != len(targets):
            raise ValidationError("sample_weights", "needs one weight per item of each training sequence")
    counts = np.bincount(np.concatenate(train_seqs), minlength=config.n_items).astype(np.float64) + 1.0
    log_q = torch.tensor(np.log(counts / counts.sum()), dtype=torch.float32)

    model = Recommender(config)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    hist_t, w_t, tgt_t = torch.from_numpy(hist), torch.from_numpy(weights), torch.from_numpy(targets)
    n, losses, start = len(targets), [], time.perf_counter()
    bar = tqdm(total=config.epochs * ((n + config.batch_size - 1) // config.batch_size),
               desc="train", unit="batch", disable=not progress)
    for _epoch in range(config.epochs):
        model.train()
        perm = torch.from_numpy(rng.permutation(n))
        total = 0.0
        for lo in range(0, n, config.batch_size):
            b = perm[lo : lo + config.batch_size]
            tgt = tgt_t[b]
            user = model.user_vectors(hist_t[b], w_t[b])
            pos = model.item_emb(tgt + 1)
            # Retrieval: in-batch softmax; items equal to the row's target are
            # not negatives for it.
            logits = user @ pos.T - log_q[tgt].unsqueeze(0)
            same = tgt.unsqueeze(0) == tgt.unsqueeze(1)
            logits = logits.masked_fill(same & ~torch.eye(len(b), dtype=torch.bool), -1e9)
            wb = None if ex_w is None else ex_w[b]
            retrieval = _mean(F.cross_entropy(logits, torch.arange(len(b)), reduction="none"), wb)
            # Click model: the chosen item against other rows' targets, which
            # are drawn by popularity, so the head must learn taste rather
            # than just popularity (uniform negatives teach mostly the latter).
            neg = tgt[torch.from_numpy(rng.integers(0, len(b), size=(len(b), config.negatives)))]
            neg_vec = model.item_emb(neg + 1).reshape(-1, config.dim)
            user_rep = user.repeat_interleave(config.negatives, dim=0)
            pos_logit = model.click.logits(user, pos)
            neg_logit = model.click.logits(user_rep, neg_vec)
            click = _mean(F.binary_cross_entropy_with_logits(
                torch.cat([pos_logit, neg_logit]),
                torch.cat([torch.ones_like(pos_logit), torch.zeros_like(neg_logit)]), reduction="none",
            ), None if wb is None else torch.cat([wb, wb.repeat_interleave(config.negatives)]))
            loss = retrieval + click
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(b)
            bar.update(1)
        losses.append(total / n)
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    bar.close()
    model.eval()
    return TrainResult(model, time.perf_counter() - start, losses)
