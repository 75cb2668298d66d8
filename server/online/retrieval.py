"""Retrieval: a catalogue's top-n items by inner product with a user vector, some items excluded.

Exact (one matrix-vector product over the catalogue) without an ANN view; with one
(server/online/ann.py, above Config.ann_min_items products), the view's candidates scored exactly.

    ids = retrieve(catalogue, user_vec, exclude={12, 40}, n=200, in_stock_only=True)
    ids = retrieve(catalogue, user_vec, set(), 200, ann=AnnIndexes(100).view("m", catalogue.ids, catalogue.vectors))
"""

from __future__ import annotations

import numpy as np

from .ann import AnnView
from .catalogue import Catalogue

# The ANN path asks the index for this many more than it keeps, over and above the excluded and
# out-of-stock items it will drop: the graph's last few answers are its least certain.
ANN_SLACK = 1.1


def retrieve(cat: Catalogue, user_vec: np.ndarray, exclude: set[int], n: int, in_stock_only: bool = False,
             ann: AnnView | None = None) -> np.ndarray:
    """Top-n item ids by inner product, best first, excluded (and, if asked, out-of-stock) items removed first."""
    if len(cat.ids) == 0:
        return cat.ids
    excluded = positions(cat.ids, exclude)
    if ann is not None:
        # Enough to survive dropping every excluded and out-of-stock item the graph might return; when
        # the dropped items crowd the top more than the stock share says, ask again for twice as many.
        # Past a quarter of the catalogue the exact scan is the cheaper way to the same answer.
        in_stock = float(cat.stock_mask.mean()) if in_stock_only else 1.0
        fetch = int(np.ceil((n + len(excluded)) * ANN_SLACK / max(in_stock, 1e-3)))
        while fetch <= len(cat.ids) // 4:
            found = _from_view(cat, ann, user_vec, excluded, n, fetch, in_stock_only)
            if len(found) == n:
                return found
            fetch *= 2
    scores = cat.vectors @ user_vec.astype(np.float32)
    if in_stock_only:
        scores[~cat.stock_mask] = -np.inf
    scores[excluded] = -np.inf
    n = min(n, int(np.isfinite(scores).sum()))
    if n <= 0:
        return cat.ids[:0]
    top = np.argpartition(-scores, n - 1)[:n] if n < len(scores) else np.arange(len(scores))
    top = top[np.isfinite(scores[top])]
    return cat.ids[top[np.argsort(-scores[top], kind="stable")]]


def positions(ids: np.ndarray, item_ids: set[int]) -> np.ndarray:
    """Positions in `ids` (sorted) of those of these item ids it has."""
    if not item_ids:
        return np.zeros(0, dtype=np.int64)
    ex = np.fromiter(item_ids, dtype=np.int64)
    pos = np.searchsorted(ids, ex)
    return pos[(pos < len(ids)) & (ids[np.minimum(pos, len(ids) - 1)] == ex)]


def _from_view(cat: Catalogue, ann: AnnView, user_vec: np.ndarray, excluded: np.ndarray, n: int, fetch: int,
               in_stock_only: bool) -> np.ndarray:
    """The view's candidates scored exactly with the catalogue's current vectors, filtered, top n."""
    pos = ann.positions(cat.ids, user_vec, fetch)  # ascending, so ties keep id order
    keep = ~np.isin(pos, excluded)
    if in_stock_only:
        keep &= cat.stock_mask[pos]
    pos = pos[keep]
    scores = cat.vectors[pos] @ user_vec.astype(np.float32)
    return cat.ids[pos[np.argsort(-scores, kind="stable")[:n]]]
