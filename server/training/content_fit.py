"""The content map refitted to a finished training run's vectors: what a product no run has seen is placed by.

Training only (scipy); serving reads the result through content.py's ContentTower, numpy alone.
"""

from __future__ import annotations

import math

import numpy as np

# The content map's ridge, on token shares (each product's tokens weigh 1/len): chosen on validation
# draws of MovieLens-100k products new in no benchmark seed (0.01 to 10 tried; docs/benchmarks.md, "New products").
CONTENT_RIDGE = 0.1

MIN_FIT_PRODUCTS = 2  # fewer trained products with content than this: the trained tower stays


def fit_content_map(item_tokens: np.ndarray, vectors: np.ndarray, n_tokens: int,
                    ridge: float = CONTENT_RIDGE) -> tuple[np.ndarray, np.ndarray, dict] | None:
    """(M, supported, report): token rows M, (n_tokens + 1, dim), such that the mean of a product's rows is
    closest to its trained vector (ridge regression from each product's token shares to the vectors training
    gave it), and which rows some fitted product carries (the rest are 0 in M: no evidence). None when fewer
    than MIN_FIT_PRODUCTS products have a known token and a finite vector.

    Why: training learns the content part beside the id part, and only the id-dropped share of its steps
    asks the content part to stand alone; a product added later has nothing else. Fitting the content to
    the finished vectors asks exactly that question (measured: new products ranked 3.45x and 4.33x random
    instead of 2.73x and 2.92x on two validation draws). `item_tokens` is (n, MAX_TOKENS) 1-based token rows,
    0-padded, for the products of `vectors`' rows. Solved column by column with LSQR on the sparse share
    matrix, so a catalogue's token count never makes a dense square system.
    """
    from scipy import sparse
    from scipy.sparse.linalg import lsqr

    if not (math.isfinite(ridge) and ridge > 0):
        raise ValueError(f"the content map's ridge must be a finite number > 0, not {ridge!r}")
    tok = np.asarray(item_tokens, np.int64)
    vec = np.asarray(vectors, np.float64)
    counts = (tok > 0).sum(axis=1)
    keep = np.flatnonzero((counts > 0) & np.isfinite(vec).all(axis=1))
    if len(keep) < MIN_FIT_PRODUCTS:
        return None
    r, c = np.nonzero(tok[keep] > 0)
    # A token twice in one product's row counts twice, as the mean over its rows does in content_vector.
    shares = sparse.csr_matrix((1.0 / counts[keep][r], (r, tok[keep][r, c])), shape=(len(keep), n_tokens + 1))
    out = np.zeros((n_tokens + 1, vec.shape[1]), np.float64)
    iterations, converged = 0, True
    for d in range(vec.shape[1]):
        sol = lsqr(shares, vec[keep, d], damp=math.sqrt(ridge), atol=1e-6, btol=1e-6, iter_lim=2000)
        out[:, d] = sol[0]
        iterations = max(iterations, int(sol[2]))
        converged &= int(sol[1]) in (1, 2)  # LSQR's "solved to tolerance" codes (7: iteration limit)
    target = vec[keep]
    resid = float(((np.asarray(shares @ out) - target) ** 2).sum() / max(((target - target.mean(0)) ** 2).sum(), 1e-12))
    supported = np.zeros(n_tokens + 1, bool)
    supported[np.unique(tok[keep][r, c])] = True
    return out.astype(np.float32), supported, {"ridge": ridge, "products": int(len(keep)), "r2": round(1.0 - resid, 4),
                                               "max_iterations": iterations, "converged": bool(converged)}
