"""The project's non-sequential parts: DLAE item-item scorer, content path, segment prior.

- `DLAE` (Steck 2020, "Autoencoders that don't overfit towards the identity"):
  B = (G + L)^-1 G with L = p/(1-p) diag(G) + lambda I. EASE's closed form with
  dropout-derived, popularity-scaled regularisation and no zero-diagonal
  constraint; on protocol 1's validation split it beats EASE at every lambda tried.
- `ContentMap`: ridge regression from item content (genres, year, title tokens)
  to learned item vectors, so an item never seen in training gets a usable
  vector from its content alone (the cold-item path; an equivalent of id dropout).
- `SegmentPrior`: popularity inside the user's segment, shrunk toward coarser
  segments and finally global popularity (the cold-user path).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


class DLAE:
    name = "DLAE (item-item)"

    def __init__(self, lam: float = 300.0, p: float = 0.5):
        self.lam, self.p = lam, p

    def fit(self, X: sp.csr_matrix) -> DLAE:
        G = (X.T @ X).toarray().astype(np.float64)
        L = self.p / (1.0 - self.p) * np.diag(G) + self.lam
        self.B = np.linalg.solve(G + np.diag(L), G).astype(np.float32)
        self.X = X
        return self

    def scores(self, users: np.ndarray) -> np.ndarray:
        return np.asarray(self.X[users] @ self.B)

    def scores_for(self, rows: sp.csr_matrix) -> np.ndarray:
        return np.asarray(rows @ self.B)


def content_features(item_text: dict, item_ids: np.ndarray, min_token_count: int = 2,
                     title_weight: float = 0.5) -> np.ndarray:
    """(n_items, f) float features: genre multi-hot, year (scaled + decade one-hot), title tokens
    (each present token = title_weight: under a ridge, a smaller weight shrinks titles harder)."""
    from pocketrank.shared.features import tokens

    rows = [item_text.get(str(i), ([], None, "")) for i in item_ids]
    genres = sorted({g for g, _, _ in rows for g in g})
    toks: dict[str, int] = {}
    for _, _, title in rows:
        for t in set(tokens(title)):
            toks[t] = toks.get(t, 0) + 1
    vocab = sorted(t for t, c in toks.items() if c >= min_token_count and not t.isdigit())
    decades = list(range(1920, 2010, 10))
    g_idx = {g: k for k, g in enumerate(genres)}
    t_idx = {t: k for k, t in enumerate(vocab)}
    F = np.zeros((len(rows), len(genres) + 2 + len(decades) + len(vocab)), np.float32)
    base_t = len(genres) + 2 + len(decades)
    for r, (gs, year, title) in enumerate(rows):
        for g in gs:
            F[r, g_idx[g]] = 1.0
        if year:
            F[r, len(genres)] = (year - 1990) / 10.0
            d = min(max((year // 10) * 10, 1920), 2000)
            F[r, len(genres) + 2 + decades.index(d)] = 1.0
        else:
            F[r, len(genres) + 1] = 1.0
        for t in set(tokens(title)):
            if t in t_idx:
                F[r, base_t + t_idx[t]] = title_weight
    return F


class ContentMap:
    """Ridge map content -> item vector, fitted on warm items only."""

    def __init__(self, alpha: float = 3.0):
        self.alpha = alpha

    def fit(self, F: np.ndarray, vectors: np.ndarray) -> ContentMap:
        Fb = np.hstack([F, np.ones((len(F), 1), np.float32)])
        A = Fb.T @ Fb + self.alpha * np.eye(Fb.shape[1])
        self.W = np.linalg.solve(A, Fb.T @ vectors).astype(np.float32)
        return self

    def transform(self, F: np.ndarray) -> np.ndarray:
        return np.hstack([F, np.ones((len(F), 1), np.float32)]) @ self.W


class SegmentPrior:
    """Item distribution per segment with hierarchical shrinkage (m pseudo-ratings per level)."""

    LEVELS = (("gender",), ("gender", "age_band"), ("gender", "age_band", "occupation"))

    def __init__(self, m: float = 200.0):
        self.m = m

    def fit(self, users: np.ndarray, items: np.ndarray, user_ids: np.ndarray,
            features: dict[str, dict[str, str]], n_items: int) -> SegmentPrior:
        self.features = features
        self.n_items = n_items
        self.glob = np.bincount(items, minlength=n_items).astype(np.float64)
        self.glob /= self.glob.sum()
        self.counts: dict[tuple, np.ndarray] = {}
        keys = [features.get(str(user_ids[u]), {}) for u in range(len(user_ids))]
        for level in self.LEVELS:
            for u, i in zip(users, items):
                key = (level, tuple(keys[u].get(f, "?") for f in level))
                self.counts.setdefault(key, np.zeros(n_items))[i] += 1
        return self

    def scores_for(self, fields: dict[str, str]) -> np.ndarray:
        p = self.glob
        for level in self.LEVELS:
            c = self.counts.get((level, tuple(fields.get(f, "?") for f in level)))
            if c is not None:
                p = (c + self.m * p) / (c.sum() + self.m)
        return p


class UserEASE:
    """EASE over users (a user-user ridge model): scores = (B_users' X)."""

    def __init__(self, lam: float = 300.0):
        self.lam = lam

    def fit(self, X: sp.csr_matrix) -> UserEASE:
        G = (X @ X.T).toarray().astype(np.float64)
        G[np.diag_indices_from(G)] += self.lam
        P = np.linalg.inv(G)
        B = -P / np.diag(P)[None, :]
        B[np.diag_indices_from(B)] = 0.0
        self.S = np.asarray((X.T @ B.astype(np.float32)).T)  # (users, items)
        return self

    def scores(self, users: np.ndarray) -> np.ndarray:
        return self.S[users]


def zscore(s: np.ndarray) -> np.ndarray:
    return (s - s.mean(1, keepdims=True)) / (s.std(1, keepdims=True) + 1e-9)


class LinearHybrid:
    """Protocol 1's model: z(DLAE) + w_user * z(user-EASE); the MMR knob is applied by the caller."""

    name = "pocketrank hybrid"

    def __init__(self, lam: float = 300.0, p: float = 0.5, w_user: float = 0.0, user_lam: float = 300.0):
        self.dlae, self.w_user, self.user_lam = DLAE(lam, p), w_user, user_lam

    def fit(self, X: sp.csr_matrix) -> LinearHybrid:
        self.dlae.fit(X)
        self.B = self.dlae.B
        self.user = UserEASE(self.user_lam).fit(X) if self.w_user > 0 else None
        return self

    def scores(self, users: np.ndarray) -> np.ndarray:
        s = zscore(self.dlae.scores(users))
        if self.user is not None:
            s = s + self.w_user * zscore(self.user.scores(users))
        return s
