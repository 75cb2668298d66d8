"""Synthetic item and user vectors shaped like the ones `pocketrank train` learns, at any catalogue size.

    from lab.catalogue_vectors import synthetic_catalogue
    cat = synthetic_catalogue(200_000, n_users=1_000, seed=0)
    cat.items (n, 64) float32, cat.users (u, 64), cat.history (u, 50) row indexes each user's vector came from

Random Gaussian vectors make an approximate index look better or worse than it will be on a real
catalogue, so these copy what a trained item table looks like. Measured on the fold model trained
on MovieLens-100k (1,682 x 64): the centred table is strongly anisotropic (the top three directions
hold 63% of the variance; participation ratio 6.7) and norms spread from 0.8 to 2.3 (5th to 95th
percentile, median 1.15). So: items are a clustered mixture (one cluster per category, about
1,000 products each) in a space whose per-direction scale falls as j**-0.8, with log-normal norms
(sigma 0.35); a user is what the shared fold makes of their history: the decayed (0.9 per event)
mean of `history_length` items drawn from two or three of the categories they like, plus noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SyntheticCatalogue:
    items: np.ndarray  # (n, dim) float32
    category: np.ndarray  # (n,) int, each item's cluster
    users: np.ndarray  # (u, dim) float32
    history: np.ndarray  # (u, history_length) int64 row indexes, oldest first


def synthetic_catalogue(n_items: int, n_users: int = 1_000, dim: int = 64, history_length: int = 50,
                        seed: int = 0, items_per_category: int = 1_000) -> SyntheticCatalogue:
    rng = np.random.default_rng(seed)
    scale = (np.arange(1, dim + 1) ** -0.8).astype(np.float32)
    n_cat = max(2, n_items // items_per_category)
    centres = rng.standard_normal((n_cat, dim), dtype=np.float32) * scale
    category = rng.integers(0, n_cat, n_items)
    items = np.empty((n_items, dim), dtype=np.float32)
    for lo in range(0, n_items, 100_000):  # in chunks: the 1 M table's temporaries stay small
        hi = min(n_items, lo + 100_000)
        x = centres[category[lo:hi]] + 0.6 * rng.standard_normal((hi - lo, dim), dtype=np.float32) * scale
        norms = np.exp(rng.normal(0.15, 0.35, hi - lo)).astype(np.float32)
        items[lo:hi] = x * (norms / np.linalg.norm(x, axis=1))[:, None]
    by_cat = np.argsort(category, kind="stable")
    starts = np.searchsorted(category[by_cat], np.arange(n_cat + 1))
    filled = np.nonzero(np.diff(starts))[0]  # categories with at least one item
    weights = 0.9 ** np.arange(history_length - 1, -1, -1, dtype=np.float32)  # the newest weighs most
    users = np.empty((n_users, dim), dtype=np.float32)
    history = np.empty((n_users, history_length), dtype=np.int64)
    for u in range(n_users):
        liked = rng.choice(filled, min(len(filled), int(rng.integers(2, 4))), replace=False)
        picks = rng.choice(liked, history_length)
        lo, hi = starts[picks], starts[picks + 1]
        rows = by_cat[lo + (rng.random(history_length) * (hi - lo)).astype(np.int64)]
        history[u] = rows
        v = (weights[:, None] * items[rows]).sum(0) / weights.sum()
        users[u] = v + 0.1 * np.linalg.norm(v) * rng.standard_normal(dim).astype(np.float32) / np.sqrt(dim)
    return SyntheticCatalogue(items, category, users, history)
