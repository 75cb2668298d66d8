"""Online ranking: retrieval by inner product, the ONNX ranker, then business rules.

Retrieval (server/online/retrieval.py) is exact (one matrix-vector product over the catalogue) below `Config.ann_min_items`
products: on the simulator's 50,000 x 64 catalogue that is about a millisecond on one core
(bench/server.py prints it), well inside the 25 ms budget, and the answer is deterministic. Above
it, an approximate nearest-neighbour index (server/online/ann.py) proposes the candidates and they
are scored exactly; docs/scaling.md has the measured recall and latency of both.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
import onnxruntime as ort

from pocketrank.shared.features import category_shares, ranker_inputs
from pocketrank.shared.rules import (
    adjust_scores,
    apply_rules,
    demote_popular,
    pick_exploration,
    place_exploration,
    place_pins,
    top_by_score,
)

from .ann import AnnView, LiveView
from .catalogue import Catalogue
from .retrieval import retrieve


def onnx_session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


@dataclass(frozen=True)
class Rules:
    """The business rules, each documented in the README's settings table."""

    max_per_category: int | None = None
    exposure_cap: float = 0.0
    exposure_penalty: float = 0.0
    explore_position: int = 0
    pinned: tuple[int, ...] = ()
    boosts: Mapping[int, float] = field(default_factory=dict)
    category_weight: float = 0.0
    popular_penalty: float = 0.0

    @classmethod
    def from_config(cls, config) -> Rules:
        return cls(config.max_per_category, config.exposure_cap, config.exposure_penalty, config.explore_position,
                   tuple(config.pinned_items), dict(config.boosts), config.category_weight, config.popular_penalty)


@dataclass
class Ranking:
    items: list[tuple[int, float]]
    slots: dict[int, str]  # item -> "pinned" or "explore", for items a rule placed


@dataclass
class Signals:
    """Per-request inputs to the rules beyond the user vector."""

    exclude: set[int] = field(default_factory=set)
    features: dict | None = None  # the user's window aggregates
    exposures: Mapping[int, float] | None = None
    rng: random.Random | None = None
    popular: Sequence[int] = ()  # the popular list, most popular first: what the popularity knob demotes


class Ranker:
    """Retrieval (inner product: exact, or an ANN view's candidates) -> ONNX click model -> rules."""

    def __init__(self, catalogue: Catalogue, model_path: Path | ort.InferenceSession, n_candidates: int = 200,
                 max_per_category: int | None = None, rules: Rules | None = None,
                 ann: AnnView | LiveView | None = None):
        self.catalogue = catalogue
        self.ann = ann
        self.session = model_path if isinstance(model_path, ort.InferenceSession) else onnx_session(model_path)
        self.n_candidates = n_candidates
        self.rules = rules or Rules(max_per_category=max_per_category)
        self.max_per_category = self.rules.max_per_category

    def retrieve(self, user_vec: np.ndarray, exclude: set[int], n: int | None = None,
                 in_stock_only: bool = False) -> np.ndarray:
        """Top-n item ids by inner product, excluded (and, if asked, out-of-stock) items removed first."""
        ann = self.ann.current() if self.ann is not None else None  # None while a first index is built
        return retrieve(self.catalogue, user_vec, exclude, n or self.n_candidates, in_stock_only, ann)

    def score(self, user_vec: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        if len(item_ids) == 0:
            return np.zeros(0, dtype=np.float32)
        return self.session.run(None, ranker_inputs(user_vec, self.catalogue.rows(item_ids)))[0]

    def rank(self, user_vec: np.ndarray, k: int, exclude: set[int]) -> list[tuple[int, float]]:
        """The configured rules without per-request signals (no exposures, no popular list: that knob is off)."""
        return self.rank_with_rules(user_vec, k, Signals(exclude=exclude)).items

    def rank_with_rules(self, user_vec: np.ndarray, k: int, signals: Signals) -> Ranking:
        candidates = self.retrieve(user_vec, signals.exclude, in_stock_only=True)
        raw = self.score(user_vec, candidates)
        r, cat = self.rules, self.catalogue
        # The popularity knob first, on the model's probabilities (the device applies it to the same ones);
        # off, the request pays nothing for it.
        tilted = cast("Sequence[float]", raw)
        if r.popular_penalty > 0:
            tilted = demote_popular(candidates.tolist(), tilted, signals.popular, r.popular_penalty)
        adjusted = adjust_scores(
            candidates.tolist(), tilted, boosts=r.boosts, exposures=signals.exposures, exposure_cap=r.exposure_cap,
            exposure_strength=r.exposure_penalty, category=cat.category,
            category_share=category_shares(signals.features), category_weight=r.category_weight)
        # 1-d arrays read as sequences here
        return self.finish(top_by_score(cast("Sequence[int]", candidates), adjusted), k, signals)

    def finish(self, ranked: list[tuple[int, float]], k: int, signals: Signals) -> Ranking:
        """Filtering rules, then pinned items, then the exploration slot."""
        r, cat = self.rules, self.catalogue
        kept = apply_rules(ranked, len(ranked), signals.exclude, cat.in_stock, cat.category, r.max_per_category)
        scores = dict(ranked)
        pins = [(i, scores.get(i, 0.0)) for i in r.pinned
                if i in cat.in_stock and cat.in_stock[i] and i not in signals.exclude]
        out = place_pins(kept, pins, k)
        slots = {i: "pinned" for i, _ in pins if any(i == j for j, _ in out)}
        if r.explore_position and signals.rng is not None:
            shown = {i for i, _ in out}
            pool = [i for i, _ in kept if i not in shown]
            pick = pick_exploration(pool, cat.provisional, signals.exposures, signals.rng.random())
            if pick is not None:
                out = place_exploration(out, (pick, scores.get(pick, 0.0)), r.explore_position, k)
                slots[pick] = "explore"
        return Ranking(out, slots)


def popular(counts: dict[int, int], in_stock: dict[int, bool], n: int = 100) -> list[int]:
    """Most-consumed in-stock items, ties by id: the cold-start answer."""
    ranked = heapq.nsmallest(n, ((-c, i) for i, c in counts.items() if in_stock.get(i, True)))
    return [i for _, i in ranked]
