"""The sequence model's ranker: retrieval's top candidates reordered by a small network trained on hard negatives.

Retrieval (the inner product of the user vector and each product's vector) is trained against the whole
catalogue. The ranker is trained where it serves: on the CANDIDATES products retrieval ranks highest after a
history, to pick the product that came next among them (a softmax over those candidates, so its negatives are
the hard ones: what retrieval itself put at the top). Its score is the inner product plus a correction read
from the user vector, the product vector, their element-wise product and the inner product; the correction's
last layer starts at zero, so an untrained ranker is retrieval order exactly.

It ships only when it beats retrieval order on validation (each user's validation product, ranked within
retrieval's candidates) by MIN_GAIN; otherwise the model is published with `ranker_kind: retrieval` and the
server and the device rank by the retrieval score. Its inputs are the user vector and the candidates' vectors,
which the server and the device already hold, so it has the retrieval ranker's ONNX signature and runs where
that runs (server/online/ranker.py, edge_runtime/rerank.py).

Its training examples are prefixes of the training histories the encoder learnt from, each read into a user
vector as the server reads a history. The gate is what keeps an over-fitted ranker out: it is judged on
products no training step saw, the validation products. Those also picked the encoder's epoch, so the gate's
retrieval figure is slightly flattering to retrieval, not to the ranker; the test figure `train` prints (and
records for a ranker that did not ship) is the unbiased one.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pocketrank.shared.errors import ModelError

from .ranking_metrics import ndcg_at_k
from .seqmodel import SequenceRecommender
from .seqtrain import Histories, user_vectors

CANDIDATES = 200  # what the server's retrieval hands its ranker (Ranker.n_candidates)
PER_USER = 20  # training positions drawn per user's history, at most
MAX_EXAMPLES = 30_000  # prefixes in all: fewer per user on a large log (MovieLens-1M: 4 a user)
TRAIN_LIST = 64  # each step's list: the product chosen and 63 of the other candidates, drawn anew each epoch
HIDDEN = 64
EPOCHS = 4  # fixed, not chosen on validation: validation only decides whether the ranker ships
LR, WEIGHT_DECAY, BATCH = 1e-3, 1e-4, 256
MIN_GAIN = 0.01  # relative nDCG@10 gain on validation needed to ship (below it, noise on a few thousand users)
RANKER_FILE = "seq_ranker.pt"


class ResidualRanker(nn.Module):
    """(user (1, dim), items (n, dim)) -> scores (n,): sigmoid(<user, item> + correction), the ONNX ranker's
    signature. `logits` scores a batch of users' candidates for training."""

    def __init__(self, dim: int, hidden: int = HIDDEN):
        super().__init__()
        self.dim, self.hidden = dim, hidden
        # The first layer over [user, item, user*item, dot] as separate maps: the user's part is computed once
        # per user, not once per candidate.
        self.item = nn.Linear(dim, hidden)
        self.pair = nn.Linear(dim, hidden, bias=False)
        self.user = nn.Linear(dim, hidden, bias=False)
        self.dot = nn.Parameter(torch.zeros(hidden))
        self.out = nn.Linear(hidden, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def logits(self, user: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """user (B, dim), items (B, K, dim) -> (B, K)."""
        u = user.unsqueeze(1)
        dot = (items * u).sum(-1)
        h = torch.relu(self.item(items) + self.pair(items * u) + self.user(u) + dot.unsqueeze(-1) * self.dot)
        return dot + self.out(h).squeeze(-1)

    def forward(self, user: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(user, items.unsqueeze(0)).squeeze(0))


def save_ranker(ranker: ResidualRanker, model_dir: Path) -> None:
    torch.save({"dim": ranker.dim, "hidden": ranker.hidden, "state": ranker.state_dict()}, model_dir / RANKER_FILE)


def load_ranker(model_dir: Path) -> ResidualRanker | None:
    """The model's learned ranker, or None when it ranks by retrieval."""
    path = model_dir / RANKER_FILE
    if not path.exists():
        return None
    try:
        saved = torch.load(path, weights_only=True)
        ranker = ResidualRanker(int(saved["dim"]), int(saved["hidden"]))
        ranker.load_state_dict(saved["state"])
    except (OSError, RuntimeError, KeyError, TypeError, ValueError, EOFError, pickle.UnpicklingError) as e:
        raise ModelError(f"{path} is not a ranker this version can read: {e}") from e
    return ranker.eval()


def top_candidates(scores: torch.Tensor, k: int) -> torch.Tensor:
    """(B, n) scores (left-out products at -inf) -> (B, min(k, n)) rows, best first."""
    return torch.topk(scores, min(k, scores.shape[1]), dim=1).indices


def _prefixes(h: Histories, pairs: list[tuple[int, int]]) -> Histories:
    """Each (user, p): the user's first p events, as a history of its own."""
    return Histories([h.rows[u][:p] for u, p in pairs], [h.types[u][:p] for u, p in pairs],
                     [h.times[u][:p] for u, p in pairs])


@torch.no_grad()
def hard_negatives(model: SequenceRecommender, h: Histories, rng: np.random.Generator,
                   per_user: int = PER_USER, k: int = CANDIDATES,
                   max_examples: int = MAX_EXAMPLES) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training examples from the histories: (user vectors (N, dim), candidate rows (N, k), the chosen product's
    place among them (N,)). Each is the user vector after a prefix of a history, computed as the server computes
    it (seqtrain.user_vectors: the prefix's newest max_len events, the newest at the last position), retrieval's
    top k for it (the prefix left out) and the product that came next, kept only when retrieval put it among
    the k. At most `max_examples` prefixes: `per_user` a user, fewer when there are many users, and a sample
    of the users when there are more users than that."""
    model.eval()
    items = model.item_vectors()
    # Never more candidates than the catalogue has products outside the longest history: a list padded with
    # left-out products would teach the ranker about products the server never shows.
    k = min(k, len(items) - max((len(r) for r in h.rows), default=0))
    users = np.array([u for u, r in enumerate(h.rows) if len(r) >= 2], dtype=np.int64)
    empty = (torch.zeros(0, model.config.dim), torch.zeros(0, max(k, 0), dtype=torch.long),
             torch.zeros(0, dtype=torch.long))
    if k < 2 or not len(users):
        return empty
    if len(users) > max_examples:
        users = np.sort(rng.choice(users, size=max_examples, replace=False))
    each = max(1, min(per_user, max_examples // len(users)))
    pairs = [(int(u), int(p)) for u in users
             for p in np.sort(rng.choice(np.arange(1, len(h.rows[u])), size=min(each, len(h.rows[u]) - 1),
                                         replace=False))]
    states, cands, places = [], [], []
    for lo in range(0, len(pairs), 1024):
        chunk = pairs[lo:lo + 1024]
        uv = torch.from_numpy(user_vectors(model, _prefixes(h, chunk)))
        s = uv @ items.T
        for r, (u, p) in enumerate(chunk):
            s[r, torch.from_numpy(h.rows[u][:p])] = -torch.inf
        top = top_candidates(s, k)
        target = torch.tensor([int(h.rows[u][p]) for u, p in chunk])
        hit = top == target.unsqueeze(1)
        found = hit.any(1)
        states.append(uv[found])
        cands.append(top[found])
        places.append(hit[found].int().argmax(1))
    return torch.cat(states), torch.cat(cands), torch.cat(places)


@torch.no_grad()
def order_metrics(model: SequenceRecommender, ranker: ResidualRanker | None, h: Histories, targets: np.ndarray,
                  k: int = CANDIDATES) -> dict:
    """nDCG@10 and HR@10 of each user's target (-1: none) within retrieval's top k of the history (left out),
    in retrieval order and, with a ranker, in its order."""
    users = np.flatnonzero(targets >= 0)
    items = model.item_vectors()
    got: dict[str, list[tuple[float, float]]] = {"retrieval": [], **({"ranker": []} if ranker is not None else {})}
    for lo in range(0, len(users), 512):
        us = users[lo:lo + 512]
        uv = torch.from_numpy(user_vectors(model, h, us))
        s = uv @ items.T
        for j, u in enumerate(us):
            s[j, torch.from_numpy(h.rows[u])] = -torch.inf
        top = top_candidates(s, k)
        orders = {"retrieval": top}
        if ranker is not None:
            scores = ranker.logits(uv, items[top])
            scores[torch.gather(s, 1, top) == -torch.inf] = -torch.inf  # left out stays out (small catalogues)
            orders["ranker"] = torch.gather(top, 1, torch.argsort(-scores, dim=1, stable=True))
        for name, o in orders.items():
            for row, u in zip(o[:, :10].tolist(), us):
                got[name].append((float(int(targets[u]) in row), ndcg_at_k(row, {int(targets[u])}, 10)))
    return {name: {"users": len(v), "HR@10": float(np.mean([a for a, _ in v])) if v else 0.0,
                   "nDCG@10": float(np.mean([b for _, b in v])) if v else 0.0} for name, v in got.items()}


@dataclass
class RankerFit:
    ranker: ResidualRanker | None  # None: retrieval order ships
    report: dict
    trained: ResidualRanker | None = None  # the ranker trained, shipped or not (None: none was)


def fit_ranker(model: SequenceRecommender, train: Histories, val: tuple[Histories, np.ndarray], seed: int,
               choice: str = "auto", log: Callable[[str], None] | None = None) -> RankerFit:
    """Train the ranker on hard negatives from `train` and decide on `val` (histories, each user's next product)
    whether it ships: `choice` "auto" ships it when it beats retrieval order by MIN_GAIN, "learned" ships it
    whatever validation says, "retrieval" trains none (seqmodel.RANKER_CHOICES, checked by SeqConfig)."""
    if choice == "retrieval":
        return RankerFit(None, {"kind": "retrieval", "reason": "ranker set to retrieval"})
    start = time.perf_counter()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    states, cands, places = hard_negatives(model, train, rng)
    if len(states) == 0:
        return RankerFit(None, {"kind": "retrieval", "reason": "no training position had its product in "
                                                                 "retrieval's candidates", "examples": 0})
    ranker = ResidualRanker(model.config.dim)
    opt = torch.optim.AdamW(ranker.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    items = model.item_vectors().detach()
    losses = []
    for _ in range(EPOCHS):
        ranker.train()
        perm = torch.from_numpy(rng.permutation(len(states)))
        total = 0.0
        for lo in range(0, len(perm), BATCH):
            b = perm[lo:lo + BATCH]
            # A list of TRAIN_LIST drawn from the candidates, the chosen product first (the ranker sees no
            # position): a quarter of the cost, and every hard negative is still drawn once in a few epochs.
            draw = torch.rand(len(b), cands.shape[1])
            draw[torch.arange(len(b)), places[b]] = -1.0
            pick = torch.topk(draw, min(TRAIN_LIST, cands.shape[1]), dim=1, largest=False).indices
            lists = torch.gather(cands[b], 1, pick)
            loss = F.cross_entropy(ranker.logits(states[b], items[lists]), torch.zeros(len(b), dtype=torch.long))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(b)
        losses.append(total / len(perm))
    ranker.eval()
    judged = order_metrics(model, ranker, val[0], val[1])
    base, learned = judged["retrieval"]["nDCG@10"], judged["ranker"]["nDCG@10"]
    gain = learned / base - 1 if base > 0 else 0.0
    ships = choice == "learned" or (judged["ranker"]["users"] > 0 and gain >= MIN_GAIN)
    report = {"kind": "learned" if ships else "retrieval", "examples": int(len(states)), "epochs": EPOCHS,
              "losses": losses, "val": judged, "val_gain": gain, "min_gain": MIN_GAIN, "choice": choice,
              "seconds": time.perf_counter() - start}
    if log:
        log(f"ranker on {len(states)} hard-negative lists: validation nDCG@10 {learned:.4f} against retrieval "
            f"order's {base:.4f} ({gain:+.1%}): " + ("ships" if ships else "retrieval order ships"))
    return RankerFit(ranker if ships else None, report, ranker)
