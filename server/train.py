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

from .model import ModelConfig, Recommender
from .sequences import training_examples


@dataclass
class TrainResult:
    model: Recommender
    seconds: float
    losses: list[float]


def train(train_seqs: list[np.ndarray], config: ModelConfig, progress: bool = True) -> TrainResult:
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    hist, weights, targets = training_examples(train_seqs, config.history)
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
            retrieval = F.cross_entropy(logits, torch.arange(len(b)))
            # Click model: the chosen item against other rows' targets, which
            # are drawn by popularity, so the head must learn taste rather
            # than just popularity (uniform negatives teach mostly the latter).
            neg = tgt[torch.from_numpy(rng.integers(0, len(b), size=(len(b), config.negatives)))]
            neg_vec = model.item_emb(neg + 1).reshape(-1, config.dim)
            user_rep = user.repeat_interleave(config.negatives, dim=0)
            pos_logit = model.click.logits(user, pos)
            neg_logit = model.click.logits(user_rep, neg_vec)
            click = F.binary_cross_entropy_with_logits(
                torch.cat([pos_logit, neg_logit]),
                torch.cat([torch.ones_like(pos_logit), torch.zeros_like(neg_logit)]),
            )
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
