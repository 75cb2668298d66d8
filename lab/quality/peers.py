"""Peers on one face: `fit(X)` on a users x items 0/1 matrix, then `scores(users)` -> dense rows.

- `Popularity`: training counts;
- `EASE` (Steck 2019): B = I - P / diag(P), P = (X'X + lambda I)^-1, closed form in numpy;
- `ImplicitALS`, `ImplicitBPR`: the `implicit` library (CPU, one thread);
- `CornacBPR`: cornac's BPR, the model behind Microsoft Recommenders' published BPR row.
Peers are scored against the same matrix they were fitted on (the user's history).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def binary_matrix(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> sp.csr_matrix:
    m = sp.csr_matrix((np.ones(len(users), np.float32), (users, items)), shape=(n_users, n_items))
    m.data[:] = 1.0  # duplicates collapse to one
    return m


class Popularity:
    name = "popularity"

    def fit(self, X: sp.csr_matrix) -> Popularity:
        self.counts = np.asarray(X.sum(0)).ravel().astype(np.float32)
        return self

    def scores(self, users: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.counts, (len(users), len(self.counts))).copy()


def ease_weights(X: sp.csr_matrix, lam: float) -> np.ndarray:
    """EASE's item-item matrix: the ridge regression of each item on all others, zero diagonal."""
    G = (X.T @ X).toarray().astype(np.float64)
    G[np.diag_indices_from(G)] += lam
    P = np.linalg.inv(G)
    B = -P / np.diag(P)[None, :]
    B[np.diag_indices_from(B)] = 0.0
    return B.astype(np.float32)


class EASE:
    name = "EASE"

    def __init__(self, lam: float = 500.0):
        self.lam = lam

    def fit(self, X: sp.csr_matrix) -> EASE:
        self.X = X
        self.B = ease_weights(X, self.lam)
        return self

    def scores(self, users: np.ndarray) -> np.ndarray:
        return np.asarray(self.X[users] @ self.B)

    def scores_for(self, rows: sp.csr_matrix) -> np.ndarray:
        return np.asarray(rows @ self.B)


def _one_thread() -> None:
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover - threadpoolctl comes with implicit/scipy stacks
        pass


class ImplicitALS:
    name = "implicit ALS"

    def __init__(self, factors: int = 64, regularization: float = 0.05, alpha: float = 5.0,
                 iterations: int = 15, seed: int = 0):
        self.kw = dict(factors=factors, regularization=regularization, alpha=alpha, iterations=iterations,
                       random_state=seed, num_threads=1, use_gpu=False)

    def fit(self, X: sp.csr_matrix) -> ImplicitALS:
        from implicit.als import AlternatingLeastSquares

        _one_thread()
        self.model = AlternatingLeastSquares(**self.kw)
        self.model.fit(X.tocsr(), show_progress=False)
        return self

    def scores(self, users: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.user_factors[users] @ self.model.item_factors.T)


class ImplicitBPR:
    name = "implicit BPR"

    def __init__(self, factors: int = 64, learning_rate: float = 0.05, regularization: float = 0.01,
                 iterations: int = 200, seed: int = 0):
        self.kw = dict(factors=factors, learning_rate=learning_rate, regularization=regularization,
                       iterations=iterations, random_state=seed, num_threads=1, use_gpu=False)

    def fit(self, X: sp.csr_matrix) -> ImplicitBPR:
        from implicit.bpr import BayesianPersonalizedRanking

        _one_thread()
        self.model = BayesianPersonalizedRanking(**self.kw)
        self.model.fit(X.tocsr(), show_progress=False)
        return self

    def scores(self, users: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.user_factors[users] @ self.model.item_factors.T)


class CornacBPR:
    """Microsoft Recommenders' BPR settings: k=200, max_iter=100, lr=0.01, lambda_reg=0.001."""

    name = "cornac BPR"

    def __init__(self, k: int = 200, max_iter: int = 100, learning_rate: float = 0.01,
                 lambda_reg: float = 0.001, seed: int = 0):
        self.kw = dict(k=k, max_iter=max_iter, learning_rate=learning_rate, lambda_reg=lambda_reg, seed=seed)

    def fit(self, X: sp.csr_matrix) -> CornacBPR:
        import cornac
        from cornac.models import BPR

        _one_thread()
        coo = X.tocoo()
        triples = list(zip(coo.row.astype(str), coo.col.astype(str), np.ones(len(coo.row))))
        ds = cornac.data.Dataset.from_uir(triples, seed=self.kw["seed"])
        self.model = BPR(verbose=False, num_threads=1, **self.kw).fit(ds)
        u_map, i_map = ds.uid_map, ds.iid_map
        n_users, n_items = X.shape
        self.U = np.zeros((n_users, self.kw["k"]), np.float32)
        self.V = np.zeros((n_items, self.kw["k"]), np.float32)
        self.b = np.full(n_items, -1e3, np.float32)  # items cornac never saw rank last
        for raw, idx in u_map.items():
            self.U[int(raw)] = self.model.u_factors[idx]
        for raw, idx in i_map.items():
            self.V[int(raw)] = self.model.i_factors[idx]
            self.b[int(raw)] = self.model.i_biases[idx]
        return self

    def scores(self, users: np.ndarray) -> np.ndarray:
        return self.U[users] @ self.V.T + self.b[None, :]
