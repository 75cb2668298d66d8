"""`pocketrank retrain` with the sequence model: fit on the window's events, rank the hold-out as the server does.

The retrain's procedure (window, newest-pick hold-out, accuracy gate: server/release/holdout.py) is the
same for every model kind; this module gives it the sequence model's two halves:
- `fit`: the window's engagements as per-user histories (product, event type, time; a run of one
  product collapsed to its last event, as `pocketrank train` reads the store), each user's newest of
  them picking the epoch, the rest learnt from; the content tower's vocabulary built from the catalogue,
  so a product the window never saw still gets its content vector;
- `SequenceCandidate.top_k`: the encoder over the case's history with its real types and times, scored
  against every product (the history left out) or, where the log has impressions, the products shown.
Recency weights (`--half-life-days`) are a fold-model option: a sequence model already weighs what
came last.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pocketrank.shared.errors import ModelError
from pocketrank.shared.schemas import Event
from pocketrank.shared.sequence import kept_events

from ..release.holdout import Case, engaged
from ..stores.base import TYPE_CODE
from ..training.content import ContentVocab
from ..training.seqtrain import Histories


def window_histories(events: Sequence[Event], index: dict[int, int]) -> tuple[list[str], Histories]:
    """(user ids, their histories in model rows) from events in time order; products outside `index` are skipped.
    What enters is what the encoder's feed takes (pocketrank.shared.sequence.kept_events): a run of one product once."""
    per_user: dict[str, list[tuple[str, int | None, float]]] = defaultdict(list)
    for e in events:
        if engaged(e):
            per_user[e.user_id].append((e.type, index.get(int(e.item_id or 0)), e.timestamp))
    users, out = [], Histories([], [], [])
    for u in sorted(per_user):
        seq = [per_user[u][k] for k in kept_events(per_user[u])]
        if not seq:
            continue
        users.append(u)
        out.rows.append(np.array([r[1] for r in seq], dtype=np.int64))
        out.types.append(np.array([TYPE_CODE[r[0]] for r in seq], dtype=np.int8))
        out.times.append(np.array([r[2] for r in seq], dtype=np.float64))
    return users, out


@dataclass
class SequenceCandidate:
    """A trained SequenceRecommender with the store ids of its rows and its content vocabulary."""

    model: Any
    item_ids: np.ndarray
    vocab: ContentVocab | None = None
    trained: np.ndarray | None = None  # rows the window had events for (None: every row); the content map fits to them
    ranker: Any = None  # its hard-negative ranker (server/training/seqranker.py), None: retrieval order
    index: dict[int, int] = field(init=False)

    def __post_init__(self) -> None:
        import torch

        with torch.no_grad():
            self.vecs = self.model.item_vectors().numpy()
        self.index = {int(i): n for n, i in enumerate(self.item_ids)}

    def user_vector(self, case: Case) -> tuple[np.ndarray | None, np.ndarray]:
        from ..training.seqtrain import user_vectors

        keep = [n for n, i in enumerate(case.history) if i in self.index]
        rows = np.array([self.index[case.history[n]] for n in keep], dtype=np.int64)
        if not rows.size:
            return None, rows
        types = case.types or ["click"] * len(case.history)
        times = case.times or [0.0] * len(case.history)
        h = Histories([rows], [np.array([TYPE_CODE[types[n]] for n in keep], dtype=np.int8)],
                      [np.array([times[n] for n in keep], dtype=np.float64)])
        return user_vectors(self.model, h)[0], rows

    def _scores(self, uv: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """The shipped order's scores of these rows: the ranker's when there is one, else the inner product."""
        if self.ranker is None or not len(rows):
            return self.vecs[rows] @ uv
        import torch

        with torch.no_grad():
            return self.ranker.logits(torch.from_numpy(uv).unsqueeze(0),
                                      torch.from_numpy(self.vecs[rows]).unsqueeze(0))[0].numpy()

    def top_k(self, case: Case, k: int) -> list[int]:
        """What the candidate would show: retrieval's top CANDIDATES (the history left out) in the ranker's order,
        or among what the user was shown (`case.shown`; products it does not know last)."""
        from ..training.seqranker import CANDIDATES

        uv, rows = self.user_vector(case)
        if case.shown is not None:  # ranked among what the user was shown; unknown products last
            known = [i for i in case.shown if i in self.index]
            s = (self._scores(uv, np.array([self.index[i] for i in known], dtype=np.int64))
                 if (known and uv is not None) else np.zeros(len(known)))
            ranked = [known[j] for j in np.argsort(-s, kind="stable")]
            return (ranked + [i for i in case.shown if i not in self.index])[:k]
        if uv is None:
            return []
        s = self.vecs @ uv
        s[rows] = -np.inf
        n = max(k, CANDIDATES) if self.ranker is not None else k
        top = np.argpartition(-s, n)[:n] if n < len(s) else np.arange(len(s))
        top = top[np.argsort(-s[top], kind="stable")]
        if self.ranker is not None:  # its order over the candidates the server would hand it
            top = top[np.isfinite(s[top])]
            top = top[np.argsort(-self._scores(uv, top), kind="stable")]
        return self.item_ids[top[:k]].tolist()


def live_recipe(live: Any) -> dict:
    """The live sequence model's recipe: the SeqConfig settings it was trained with that differ from the
    defaults, but the data's and the run's. A model trained with tuned settings or a budget (`train --tune`,
    `--lr-schedule linear`) is retrained the same way, not at the defaults. Its epochs only under a linear
    schedule, where they are the budget; at a constant rate they were a cap (a one-off `retrain --epochs 2`
    must not become every later retrain's). {} when the live model is none or not a sequence model."""
    from ..training.seqmodel import NOT_SETTINGS, SeqConfig

    if not isinstance(live, SequenceCandidate):
        return {}
    default = SeqConfig(n_items=1).to_dict()
    config = live.model.config.to_dict()
    recipe = {k: v for k, v in config.items() if k not in NOT_SETTINGS and v != default.get(k)}
    if config.get("lr_schedule") != "linear":
        recipe.pop("epochs", None)
    return recipe


def sequence_fit(store, item_ids: np.ndarray, epochs: int | None, seed: int, progress: bool,
                 recipe: dict | None = None) -> Callable[[list[Event], Any], SequenceCandidate]:
    """fit(train_events, weights) for gated_retrain: a SequenceCandidate over `item_ids` (store indexes), trained
    with `recipe` (SeqConfig fields; `live_recipe`) and, when given, `epochs` in place of the recipe's."""
    from ..training.seqmodel import SeqConfig
    from ..training.seqranker import fit_ranker
    from ..training.seqtrain import fit as fit_model
    from .sequence import trained_rows

    index = {int(i): n for n, i in enumerate(item_ids)}
    meta = {it.item_id: it for it in store.items()}
    vocab = ContentVocab.build(meta[int(i)] for i in item_ids if int(i) in meta)
    tokens = vocab.matrix([meta.get(int(i)) for i in item_ids])

    def fit(train_events: list[Event], weights: Any = None) -> SequenceCandidate:
        if weights is not None:
            raise ModelError("--half-life-days weighs a fold model's loss; the sequence model reads recency "
                             "from its history (retrain it without --half-life-days, or with --model fold)")
        _users, hist = window_histories(train_events, index)
        val = np.array([r[-1] if len(r) >= 2 else -1 for r in hist.rows], dtype=np.int64)
        config = SeqConfig(n_items=len(item_ids), n_tokens=len(vocab), seed=seed, **(recipe or {}))
        if epochs is not None:
            config.epochs = epochs
        result = fit_model(hist.head(1), config, tokens, val=(hist.head(1), val), progress=progress)
        ranked = fit_ranker(result.model, hist.head(1), (hist.head(1), val), seed, config.ranker)
        # Rows of an untrained id part (products the window never saw, or saw only as a user's newest) are no
        # fitting target, and are published with their content vector (jobs/sequence.py's save_model).
        return SequenceCandidate(result.model, item_ids, vocab, trained_rows(hist.head(1), len(item_ids)),
                                 ranked.ranker)

    return fit


def load_candidate(model_dir: Path) -> SequenceCandidate:
    from ..training import seqmodel
    from ..training.content import ContentTower
    from ..training.seqranker import load_ranker

    m, meta = seqmodel.load(model_dir)
    ids = np.asarray(meta.get("item_ids") or np.arange(1, m.config.n_items + 1), dtype=np.int64)
    try:
        tower = ContentTower.load(model_dir)
    except (OSError, ValueError, KeyError):
        tower = None
    return SequenceCandidate(m, ids, tower.vocab if tower is not None else None, ranker=load_ranker(model_dir))


def save_candidate(cand: SequenceCandidate, out: Path, version: str) -> None:
    """The candidate where serving, export and rebase read a sequence version: weights, tower, vectors."""
    from ..online.versions import save_vectors
    from ..training.seqranker import save_ranker
    from .sequence import save_model

    if cand.vocab is None:
        raise ModelError(f"candidate {version} has no content vocabulary to save")
    _tower, vecs, _fit = save_model(cand.model, cand.vocab, out, {"model_version": version,
                                                                   "item_ids": cand.item_ids.tolist()},
                                    trained=cand.trained)
    if cand.ranker is not None:
        save_ranker(cand.ranker, out)
    save_vectors(out, cand.item_ids, vecs)
