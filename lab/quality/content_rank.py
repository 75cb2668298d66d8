"""Content-only item vectors fitted for what they are used for: ranking items for a user.

`ContentMap` (hybrid.py) regresses content onto the learned item vectors.
`RankingContentMap` instead fits the map W so that the *score* a user gets,
<u, W f_i> + b'f_i, reproduces the user's (warm) interactions:

    min_W  || Y - Z W F' ||^2 + lam ||W||^2,   Z = [user vectors, 1],  F = [content, 1]

with Y the binary user x warm-item matrix, each row divided by sqrt(its count)
so heavy users do not dominate. The user vectors are fixed (the device's fold of
the history, as served). The least-squares solution is closed form through two
eigendecompositions (Z'Z = Qa diag(a) Qa', F'F = Qf diag(f) Qf'):

    W = Qa [ (Qa' Z'Y F Qf) / (a_i f_j + lam) ] Qf'

The result is still a plain item vector per new item (W's user-vector rows
applied to its content) plus a content-predicted bias (the intercept row), so
"new products get content-only vectors" stays true on the server and device.

`content_profile` is the other, optional term: the mean of the normalised
content features of the user's last items, dotted with a new item's content.
It needs the content features on the scorer, so it is not part of the item vector.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> U, F = rng.normal(size=(50, 3)).astype(np.float32), rng.normal(size=(20, 4)).astype(np.float32)
    >>> Y = (U @ rng.normal(size=(3, 4)) @ F.T > 1).astype(np.float32)
    >>> m = RankingContentMap(lam=1.0).fit(U, Y, F)
    >>> m.item_vectors(F).shape, m.bias(F).shape
    ((20, 3), (20,))
"""

from __future__ import annotations

import numpy as np

from pocketrank.shared.errors import DataError


def _with_one(A: np.ndarray) -> np.ndarray:
    return np.hstack([A, np.ones((len(A), 1), A.dtype)])


class RankingContentMap:
    """Content -> item vector (+ bias), least squares on the user x item scores; closed form."""

    def __init__(self, lam: float = 3000.0):
        if lam <= 0:
            raise DataError(f"RankingContentMap needs lam > 0, got {lam}")
        self.lam = float(lam)

    def fit(self, user_vectors: np.ndarray, Y, F: np.ndarray, row_norm: bool = True) -> RankingContentMap:
        """user_vectors (n_users, d); Y (n_users, n_items) interactions with warm items (dense or
        sparse); F (n_items, f) those items' content features. Users with no interaction are skipped."""
        Y = np.asarray(Y.toarray() if hasattr(Y, "toarray") else Y, dtype=np.float64)
        if Y.shape != (len(user_vectors), len(F)):
            raise DataError(f"Y is {Y.shape}, expected ({len(user_vectors)}, {len(F)}) users x items")
        n = Y.sum(1)
        active = n > 0
        if not active.any():
            raise DataError("RankingContentMap needs at least one interaction")
        Y = Y[active]
        if row_norm:  # each user counts about equally, not in proportion to their history
            Y = Y / np.sqrt(n[active])[:, None]
        Z = _with_one(np.asarray(user_vectors, np.float64)[active])
        Fb = _with_one(np.asarray(F, np.float64))
        a, Qa = np.linalg.eigh(Z.T @ Z)
        f, Qf = np.linalg.eigh(Fb.T @ Fb)
        R = Qa.T @ (Z.T @ Y @ Fb) @ Qf
        self.W = (Qa @ (R / (a[:, None] * f[None, :] + self.lam)) @ Qf.T).astype(np.float32)
        return self

    def item_vectors(self, F: np.ndarray) -> np.ndarray:
        """(n, d) content-only vectors: what the server and device store for new products."""
        return _with_one(np.asarray(F, np.float32)) @ self.W[:-1].T

    def bias(self, F: np.ndarray) -> np.ndarray:
        """(n,) the intercept row: a content-predicted popularity, the same for every user."""
        return _with_one(np.asarray(F, np.float32)) @ self.W[-1]

    def scores(self, user_vectors: np.ndarray, F: np.ndarray) -> np.ndarray:
        return np.asarray(user_vectors, np.float32) @ self.item_vectors(F).T + self.bias(F)[None, :]


def blend_vectors(user_vectors: np.ndarray, base: np.ndarray, other: np.ndarray, weight: float,
                  fit_rows: np.ndarray | None = None) -> np.ndarray:
    """base + weight * c * other, c matching the spread of <u, other> to that of <u, base>.

    Both are linear in the user vector, so the blend is again one plain vector
    per item. c is estimated over `fit_rows` (the warm items, so training data
    only) and the blend applied to every row."""
    if weight == 0:
        return base
    U = np.asarray(user_vectors, np.float32)
    rows = slice(None) if fit_rows is None else fit_rows
    c = float(np.std(U @ base[rows].T) / max(float(np.std(U @ other[rows].T)), 1e-12))
    return base + weight * c * other


def content_profile(F: np.ndarray, histories: list[np.ndarray], length: int = 50) -> np.ndarray:
    """(n_users, f): mean of the row-normalised content of each user's last `length` items (0 if none)."""
    Fn = F / np.maximum(np.linalg.norm(F, axis=1, keepdims=True), 1e-9)
    out = np.zeros((len(histories), F.shape[1]), np.float32)
    for r, h in enumerate(histories):
        if len(h):
            out[r] = Fn[np.asarray(h)[-length:]].mean(0)
    return out
