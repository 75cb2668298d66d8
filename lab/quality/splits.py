"""The splits behind the benchmark protocols, as boolean masks over interaction rows.

`python_stratified_split` reimplements Microsoft Recommenders'
`recommenders.datasets.python_splitters.python_stratified_split` (via its
`_do_stratification`, is_random=True) step for step:

1. `np.random.seed(seed)`; one `np.random.rand()` draw per row, in row order;
2. sort rows by (group column, that draw) -- group = item for filter_by="item";
3. per group, rank = position (1-based) / group size;
4. train = rows with rank <= ratio, test = rows with ratio < rank <= 1.

So each item keeps round-down-ish 75% of its ratings in training (an item with
one rating goes entirely to test, rank 1/1 = 1 > 0.75), and a user may have
all, some or none of their ratings in test. The library's prose says "per
user"; with filter_by="item", as the benchmark notebooks call it, it is per item.
"""

from __future__ import annotations

import numpy as np

from pocketrank.server.training import sequences

from .data import Interactions


def python_stratified_split(users: np.ndarray, items: np.ndarray, ratio: float = 0.75,
                            filter_by: str = "user", seed: int = 42) -> np.ndarray:
    """Boolean train mask over rows (test = ~mask), identical to the library's split."""
    if filter_by not in ("user", "item"):
        raise ValueError("filter_by should be either 'user' or 'item'.")
    if not 0.0 < ratio < 1.0:
        raise ValueError("ratio must be in (0, 1)")
    draw = np.random.RandomState(seed).rand(len(users))  # == np.random.seed(seed); np.random.rand(n)
    key = np.asarray(items if filter_by == "item" else users)
    order = np.lexsort((draw, key))  # pandas sort_values([key, "random"]): key first, then draw
    sorted_key = key[order]
    starts = np.r_[0, np.flatnonzero(sorted_key[1:] != sorted_key[:-1]) + 1]
    sizes = np.diff(np.r_[starts, len(order)])
    group_start = np.repeat(starts, sizes)
    rank = (np.arange(len(order)) - group_start + 1) / np.repeat(sizes, sizes)
    train = np.zeros(len(users), dtype=bool)
    train[order] = rank <= ratio
    return train


def protocol2_split(seqs: list[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Protocol 2: per user, train = all but the last two, val = one before last, test = last.

    The same split training uses (pocketrank.server.training.sequences.split_last_two), as a tuple.
    Users with fewer than three events keep them all in training (val/test = -1).
    """
    split = sequences.split_last_two(seqs)
    return split.train, split.val, split.test


def global_time_split(data: Interactions, quantile: float = 0.8) -> np.ndarray:
    """Protocol 3: train mask = rows strictly before the time quantile."""
    cut = np.quantile(data.timestamps, quantile)
    return data.timestamps < cut


def held_out(n: int, fraction: float, seed: int) -> np.ndarray:
    """A seeded boolean mask marking `fraction` of n ids as held out (cold users / new items)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(n, dtype=bool)
    mask[rng.choice(n, size=max(1, int(round(n * fraction))), replace=False)] = True
    return mask


# The benchmark's seeds (bench/quality.py runs every protocol over them) and the draws of its
# cold users / new items per seed. Tuning must never see any seed's held-out ids, so it excludes
# their union (`benchmark_held_out`), not just one seed's.
BENCH_SEEDS = (0, 1, 2)
COLD_USER_BASE, NEW_ITEM_BASE = 1000, 2000


def cold_users_mask(n_users: int, seed: int) -> np.ndarray:
    """The cold users of benchmark seed `seed` (10% of users, held out entirely)."""
    return held_out(n_users, 0.1, seed=COLD_USER_BASE + seed)


def new_items_mask(n_items: int, seed: int) -> np.ndarray:
    """The new items of benchmark seed `seed` (10% of items, held out of training)."""
    return held_out(n_items, 0.1, seed=NEW_ITEM_BASE + seed)


def benchmark_held_out(n: int, kind: str, seeds=BENCH_SEEDS) -> np.ndarray:
    """Union over the benchmark seeds of the held-out ids: kind "users" (cold) or "items" (new)."""
    draw = {"users": cold_users_mask, "items": new_items_mask}
    if kind not in draw:
        raise ValueError(f"kind must be 'users' or 'items', got {kind!r}")
    out = np.zeros(n, dtype=bool)
    for s in seeds:
        out |= draw[kind](n, s)
    return out
