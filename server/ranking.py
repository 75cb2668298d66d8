"""Online ranking: retrieval by inner product, the ONNX ranker, then business rules."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from shared.features import ranker_inputs
from shared.rules import apply_rules, top_by_score


def onnx_session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


@dataclass
class Catalogue:
    """Item vectors and metadata as arrays, for scoring many items at once."""

    ids: np.ndarray  # (n,) int64
    vectors: np.ndarray  # (n, dim) float32
    in_stock: dict[int, bool]
    category: dict[int, str]

    def rows(self, item_ids: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(self.ids, item_ids)
        return self.vectors[pos]


class Ranker:
    """Retrieval (exact inner product over the catalogue) -> ONNX click model -> rules."""

    def __init__(self, catalogue: Catalogue, model_path: Path, n_candidates: int = 200,
                 max_per_category: int | None = None):
        self.catalogue = catalogue
        self.session = onnx_session(model_path)
        self.n_candidates = n_candidates
        self.max_per_category = max_per_category

    def retrieve(self, user_vec: np.ndarray, exclude: set[int], n: int | None = None) -> np.ndarray:
        """Top-n item ids by inner product, excluded items removed first."""
        n = n or self.n_candidates
        scores = self.catalogue.vectors @ user_vec.astype(np.float32)
        if exclude:
            mask = np.isin(self.catalogue.ids, np.fromiter(exclude, dtype=np.int64))
            scores = np.where(mask, -np.inf, scores)
        n = min(n, int(np.isfinite(scores).sum()))
        top = np.argpartition(-scores, n - 1)[:n] if n < len(scores) else np.arange(len(scores))
        top = top[np.isfinite(scores[top])]
        return self.catalogue.ids[top[np.argsort(-scores[top], kind="stable")]]

    def score(self, user_vec: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        if len(item_ids) == 0:
            return np.zeros(0, dtype=np.float32)
        return self.session.run(None, ranker_inputs(user_vec, self.catalogue.rows(item_ids)))[0]

    def rank(self, user_vec: np.ndarray, k: int, exclude: set[int]) -> list[tuple[int, float]]:
        candidates = self.retrieve(user_vec, exclude)
        ranked = top_by_score(candidates, self.score(user_vec, candidates))
        return apply_rules(ranked, k, exclude, self.catalogue.in_stock, self.catalogue.category,
                           self.max_per_category)


def popular(counts: dict[int, int], in_stock: dict[int, bool], n: int = 100) -> list[int]:
    """Most-consumed in-stock items, ties by id: the cold-start answer."""
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [i for i, _ in ranked if in_stock.get(i, True)][:n]
