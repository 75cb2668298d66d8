"""The in-memory catalogue the ranker scores, and provisional vectors for new products."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pocketrank.shared.features import tokens
from pocketrank.shared.schemas import Item

from .titles import TitleIndex


@dataclass
class Catalogue:
    """Item vectors and metadata as arrays, for scoring many items at once."""

    ids: np.ndarray  # (n,) int64, sorted
    vectors: np.ndarray  # (n, dim) float32
    in_stock: dict[int, bool]
    category: dict[int, str]
    provisional: frozenset[int] = frozenset()
    titles: dict[int, str] = field(default_factory=dict)
    # The marketplace's product ids: index -> id, and back (every catalogue item, with a vector or not).
    external: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Out-of-stock items are masked out before the top-N cut, so they never
        # take a candidate slot that an available item could have had.
        self.stock_mask = np.array([self.in_stock.get(int(i), True) for i in self.ids], dtype=bool)
        self._vector_map: dict[int, np.ndarray] | None = None
        self._titles: TitleIndex | None = None
        self._centroids: dict[str, tuple[np.ndarray, int]] | None = None
        self.index_of = {sku: i for i, sku in self.external.items()}

    def external_id(self, item_id: int) -> str:
        """The product's own id for an index (its digits when the catalogue does not know it)."""
        return self.external.get(int(item_id)) or str(int(item_id))

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1]) if self.vectors.ndim == 2 and self.vectors.shape[1] else 64

    def rows(self, item_ids: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(self.ids, item_ids)
        return self.vectors[pos]

    def vector_map(self) -> dict[int, np.ndarray]:
        if self._vector_map is None:
            self._vector_map = {int(i): v for i, v in zip(self.ids, self.vectors)}
        return self._vector_map

    def title_index(self) -> TitleIndex:
        if self._titles is None:
            self._titles = TitleIndex(self.titles, self.vector_map())
        return self._titles


    def category_sums(self) -> dict[str, tuple[np.ndarray, int]]:
        """Per category, the sum and count of trained (not provisional) item vectors."""
        if self._centroids is None:
            sums: dict[str, tuple[np.ndarray, int]] = {}
            for i, v in zip(self.ids.tolist(), self.vectors):
                if i in self.provisional:
                    continue
                cat = self.category.get(i, "")
                s, n = sums.get(cat, (np.zeros(self.dim, dtype=np.float64), 0))
                sums[cat] = (s + v, n + 1)
            self._centroids = sums
        return self._centroids


def load_catalogue(store) -> Catalogue:
    ids, vecs = store.item_vectors()
    items = store.items()
    return Catalogue(ids, vecs, {it.item_id: it.in_stock for it in items}, {it.item_id: it.category for it in items},
                     frozenset(store.provisional_items()), {it.item_id: it.title for it in items},
                     {it.item_id: it.external_id for it in items})


def provisional_vector(item: Item, catalogue: Catalogue, max_neighbours: int = 20) -> np.ndarray:
    """A content-only vector for a product no training run has seen yet.

    The mean of two estimates, each used when it exists: the centroid of
    trained items in the product's categories, and the mean of the trained
    items whose titles share the most words with its title (words in more than
    5% of titles, like "the", are ignored). With neither, the catalogue mean,
    so a new product still has a vector and can be retrieved at once.
    """
    sums = catalogue.category_sums()
    if not sums:
        return np.zeros(catalogue.dim, dtype=np.float32)
    estimates: list[Any] = []  # vectors: sums of vectors over counts
    in_cats = [sums[c] for c in set(item.categories) | {item.category} if c in sums]
    if in_cats:
        estimates.append(sum(s for s, _ in in_cats) / sum(n for _, n in in_cats))
    postings = catalogue.title_index().postings
    limit = max(1, len(catalogue.ids) // 20)
    overlap: Counter[int] = Counter()
    for tok in set(tokens(item.title)):
        hits = postings.get(tok, ())
        if len(hits) <= limit:
            overlap.update(i for i in hits if i != item.item_id and i not in catalogue.provisional)
    if overlap:
        best = sorted(overlap.items(), key=lambda kv: (-kv[1], kv[0]))[:max_neighbours]
        estimates.append(catalogue.rows(np.array([i for i, _ in best], dtype=np.int64)).mean(axis=0))
    if not estimates:
        estimates.append(sum(s for s, _ in sums.values()) / sum(n for _, n in sums.values()))
    return np.mean(estimates, axis=0).astype(np.float32)


class CatalogueCache:
    """The current catalogue, reloaded when the model or the catalogue changes.

    Workers and the updater each hold one; they look at the store's versions at
    most every `refresh_seconds`, so a change made by another process shows
    within that time, and one made here (invalidate) at once.
    """

    def __init__(self, store, refresh_seconds: float = 1.0):
        self.store = store
        self.refresh_seconds = refresh_seconds
        self._key: tuple | None = None
        self._checked = 0.0
        self._catalogue: Catalogue | None = None
        self._lock = threading.Lock()

    def version_key(self) -> tuple:
        return (self.store.get_meta("current_model"), self.store.catalogue_version())

    def get(self) -> Catalogue:
        now = time.monotonic()
        if self._catalogue is not None and now - self._checked < self.refresh_seconds:
            return self._catalogue
        with self._lock:
            key = self.version_key()
            self._checked = now
            if self._catalogue is None or key != self._key:
                self._catalogue, self._key = load_catalogue(self.store), key
            return self._catalogue

    @property
    def model_version(self) -> str | None:
        return self._key[0] if self._key else None

    def invalidate(self) -> None:
        self._checked = 0.0
