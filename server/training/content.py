"""What a product's content says, as tokens the item tower embeds.

A product's vector is its id embedding plus the mean embedding of its content
tokens: category path levels, title words, a price bucket (with its currency),
attributes and a release period where the catalogue has one. Training drops
the id part at random, so the content part learns to stand alone; then
`content_fit.fit_content_map` refits the token rows to the finished vectors, and that map
is what a product added after training gets (`content_vector`), at
`POST /v1/items`, without retraining. Pure numpy here: serving computes it
without torch.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pocketrank.shared.features import tokens
from pocketrank.shared.schemas import Item

MAX_TOKENS = 24  # per product; a long title's later words add little
MIN_COUNT = 2  # a token only one product has is its id again, learnt by the id embedding


def product_tokens(item: Item) -> list[str]:
    """The content tokens of one product, most informative first (categories, then title words)."""
    out = [f"cat:{c.lower()}" for c in (item.categories or (item.category,)) if c]
    if item.category:
        out.append(f"path:{item.category.lower()}")
    out += [f"attr:{k.lower()}={v.lower()}" for k, v in item.attributes]
    if item.price and item.price > 0 and math.isfinite(item.price):
        # Doubling buckets: a price twice another is a different kind of purchase, 10% more is not.
        out.append(f"price:{item.currency.lower()}:{int(math.floor(math.log2(max(item.price, 0.01))))}")
    if item.year:
        out.append(f"period:{item.year // 5 * 5}")
    out += [f"title:{t}" for t in tokens(item.title or "") if not t.isdigit()]
    return list(dict.fromkeys(out))[:MAX_TOKENS]


@dataclass(frozen=True)
class ContentVocab:
    """Token -> row of the content table (1-based; row 0 is padding)."""

    index: dict[str, int]

    @classmethod
    def build(cls, items: Iterable[Item], min_count: int = MIN_COUNT) -> ContentVocab:
        counts = Counter(t for it in items for t in product_tokens(it))
        kept = sorted(t for t, n in counts.items() if n >= min_count)
        return cls({t: k + 1 for k, t in enumerate(kept)})

    def __len__(self) -> int:
        return len(self.index)

    def rows(self, item: Item) -> list[int]:
        return [r for r in (self.index.get(t) for t in product_tokens(item)) if r is not None]

    def matrix(self, items: Sequence[Item | None]) -> np.ndarray:
        """(len(items), MAX_TOKENS) int64 token rows, 0-padded; None (a product the catalogue lacks) is all 0."""
        out = np.zeros((len(items), MAX_TOKENS), dtype=np.int64)
        for k, it in enumerate(items):
            if it is not None:
                r = self.rows(it)
                out[k, : len(r)] = r
        return out

    def to_list(self) -> list[str]:
        return sorted(self.index, key=self.index.__getitem__)

    @classmethod
    def from_list(cls, tokens_in_order: list[str]) -> ContentVocab:
        return cls({t: k + 1 for k, t in enumerate(tokens_in_order)})


def content_vector(item: Item, vocab: ContentVocab, table: np.ndarray, projection: np.ndarray) -> np.ndarray | None:
    """A product's vector from its content alone (its id part is what training dropped): the mean of its
    tokens' rows through the tower's projection; None when none of its tokens is known."""
    rows = vocab.rows(item)
    if not rows:
        return None
    return content_vectors(np.array([rows], np.int64), table, projection)[0]


def content_vectors(item_tokens: np.ndarray, table: np.ndarray, projection: np.ndarray) -> np.ndarray:
    """content_vector for each row of (n, MAX_TOKENS) token rows; NaN rows for products without a known token."""
    tok = np.asarray(item_tokens, np.int64)
    counts = (tok > 0).sum(axis=1, keepdims=True)
    summed = np.asarray(table, np.float32)[tok].sum(axis=1)  # row 0 of the table is padding, 0 in both towers
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (summed / counts) @ np.asarray(projection, np.float32).T
    out[counts[:, 0] == 0] = np.nan
    return out.astype(np.float32)


TOWER_FILE = "content.npz"


@dataclass(frozen=True)
class ContentTower:
    """A sequence model's content part, saved beside it so the server places new products without torch."""

    vocab: ContentVocab
    table: np.ndarray  # (n_tokens + 1, dim): the fitted content map, or the trained token table
    projection: np.ndarray  # (dim, dim): the identity after a fit, or the trained projection

    def vector(self, item: Item) -> np.ndarray | None:
        return content_vector(item, self.vocab, self.table, self.projection)

    def save(self, model_dir) -> None:
        with open(Path(model_dir) / TOWER_FILE, "wb") as f:
            np.savez(f, tokens=np.array(self.vocab.to_list(), dtype=object).astype(str), table=self.table,
                     projection=self.projection)

    @classmethod
    def load(cls, model_dir) -> ContentTower | None:
        """The tower of a sequence model's folder; None for a model without one (a fold model)."""
        path = Path(model_dir) / TOWER_FILE
        if not path.exists():
            return None
        with np.load(path) as z:
            return cls(ContentVocab.from_list([str(t) for t in z["tokens"]]), z["table"].astype(np.float32),
                       z["projection"].astype(np.float32))
