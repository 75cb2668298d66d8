"""Two-stage protocol-1 model: the linear hybrid retrieves, a small learned ranker re-orders.

This is the product's architecture (retrieval, then a click model with cross
features) on protocol 1's data:

1. **Candidates**: the `LinearHybrid`'s top `n_candidates` unseen items per user.
2. **Features** per (user, candidate), all computable by the server from the
   interaction log and the catalogue (`candidate_features`): z-scores of
   DLAE, user-EASE, EASE, implicit ALS and RP3beta; the strongest single
   DLAE weight from the history; the candidate's retrieval rank; item
   popularity; user activity; genre overlap of the item with the user's
   history; the year gap between the item and the user's history; how often
   the item was consumed while the user was active (`TimeIndex`).
3. **Ranker** (`Ranker`): an MLP trained with BCE (or a per-user softmax
   over the candidate list) on labels = "the candidate is in the held part".

Stacking without peeking (`TwoStage.fit`): labels need held-out interactions,
so the ranker learns on *carves* of the training rows (tuning.py's
stratified-per-item 75/25 splits of the training rows, seeds 7, 8 and 9): base
models fit on a carve's train part, labels are its held part. At prediction
time the base models are refit on all training rows and the trained ranker
re-orders their candidates. Features are scale-free (z-scores, ranks,
percentiles, ratios) so a ranker learned on a carve (75% of the rows) transfers
to the full training set. Test rows are never an input to any of this.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from . import beyond, peers
from .hybrid import LinearHybrid, zscore

FEATURES = ("z_dlae", "z_user_ease", "z_ease", "z_als", "z_rp3", "max_sim", "log_rank", "pop_pct", "log_pop",
            "user_activity", "genre_overlap", "year_gap", "local_pop", "local_share")


@dataclass
class RankerConfig:
    hidden: int = 32
    layers: int = 2
    epochs: int = 20
    lr: float = 3e-3
    weight_decay: float = 1e-5
    batch_users: int = 64  # minibatches are whole users' candidate lists (needed by the listwise loss)
    loss: str = "bce"  # "bce" (pointwise, the click model's loss) or "listwise" (softmax over the list)
    seed: int = 0


# ---------------------------------------------------------------- item side data
def item_side(item_text: dict, item_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(genre multi-hot (n_items, g), year (n_items,), unknown years = the catalogue median)."""
    rows = [item_text.get(str(i), ([], None, "")) for i in item_ids]
    genres = sorted({g for gs, _, _ in rows for g in gs})
    idx = {g: k for k, g in enumerate(genres)}
    G = np.zeros((len(rows), max(len(genres), 1)), np.float32)
    years = np.array([y if y else np.nan for _, y, _ in rows], np.float64)
    for r, (gs, _, _) in enumerate(rows):
        for g in gs:
            G[r, idx[g]] = 1.0
    med = np.nanmedian(years) if np.isfinite(years).any() else 0.0
    return G, np.where(np.isfinite(years), years, med).astype(np.float32)


# ---------------------------------------------------------------- time context
class TimeIndex:
    """When each user was active and when each item was consumed, from the rows a model may see.

    Behind the `local_pop`/`local_share` features: how often the item was consumed while
    the user was active (their first to last event, padded by `pad_days`), i.e. what was
    trending when the user was around. Many MovieLens users rate in one sitting.
    """

    def __init__(self, users: np.ndarray, items: np.ndarray, timestamps: np.ndarray, n_users: int,
                 n_items: int, pad_days: float = 7.0):
        ts = np.asarray(timestamps, np.float64)
        self.t_min = np.full(n_users, np.inf)
        self.t_max = np.full(n_users, -np.inf)
        np.minimum.at(self.t_min, users, ts)
        np.maximum.at(self.t_max, users, ts)
        self.pad = pad_days * 86400.0
        order = np.lexsort((ts, items))
        self.times = ts[order]
        self.start = np.searchsorted(items[order], np.arange(n_items + 1))

    def counts_in_window(self, users: np.ndarray, cand: np.ndarray) -> np.ndarray:
        """(U, K): the candidate's consumptions inside each user's padded active window."""
        lo = np.broadcast_to((self.t_min[users] - self.pad)[:, None], cand.shape).ravel()
        hi = np.broadcast_to((self.t_max[users] + self.pad)[:, None], cand.shape).ravel()
        flat = cand.ravel()
        out = np.zeros(len(flat))
        order = np.argsort(flat, kind="stable")
        items, first = np.unique(flat[order], return_index=True)
        bounds = np.r_[first, len(flat)]
        for j, i in enumerate(items):  # one searchsorted per distinct item
            sel = order[bounds[j]: bounds[j + 1]]
            t = self.times[self.start[i]: self.start[i + 1]]
            out[sel] = np.searchsorted(t, hi[sel], "right") - np.searchsorted(t, lo[sel], "left")
        # a user with no rows here has t_min = inf, t_max = -inf: an empty window (hi < lo), whose
        # difference above is negative; clip it to 0 (a negative count would give log1p -> NaN)
        return np.maximum(out, 0.0).reshape(cand.shape)


# ---------------------------------------------------------------- base models + features
class RP3beta:
    """RP3beta (Paudel et al. 2017): 3-step random walk item-item weights, divided by popularity^beta.

    The paper's exponent alpha on the walk probabilities is fixed at 1 (the only value used here)."""

    def __init__(self, beta: float = 0.5):
        self.beta = beta

    def fit(self, X: sp.csr_matrix) -> RP3beta:
        X = sp.csr_matrix(X, dtype=np.float64)
        deg_u = np.maximum(np.asarray(X.sum(1)).ravel(), 1.0)
        deg_i = np.maximum(np.asarray(X.sum(0)).ravel(), 1.0)
        P_ui = sp.diags(1.0 / deg_u) @ X
        P_iu = sp.diags(1.0 / deg_i) @ X.T
        W = (P_iu @ P_ui).toarray()
        W /= deg_i[None, :] ** self.beta
        np.fill_diagonal(W, 0.0)
        self.W, self.X = W.astype(np.float32), X
        return self

    def scores(self, users: np.ndarray) -> np.ndarray:
        return np.asarray(self.X[users] @ self.W)



@dataclass
class BaseModels:
    """The first stage and the feature sources, fitted on one interaction matrix."""

    p1: dict
    ease_lambda: float
    als: dict
    seed: int = 0
    n_candidates: int = 100

    def fit(self, X: sp.csr_matrix) -> BaseModels:
        h = self.p1
        self.X = X
        self.hybrid = LinearHybrid(h["lam"], h["p"], h["w_user"], h["user_lam"]).fit(X)
        self.ease = peers.EASE(self.ease_lambda).fit(X)
        self.alsm = peers.ImplicitALS(seed=self.seed, **self.als).fit(X)
        self.rp3 = RP3beta().fit(X)
        return self

    def candidates(self, users: np.ndarray) -> tuple[np.ndarray, dict]:
        """(users, n_candidates) item indices, best first, and the z-scored base scores by name."""
        z = {"z_dlae": zscore(self.hybrid.dlae.scores(users)),
             "z_user_ease": zscore(self.hybrid.user.scores(users)) if self.hybrid.user is not None else None,
             "z_ease": zscore(self.ease.scores(users)),
             "z_als": zscore(self.alsm.scores(users)),
             "z_rp3": zscore(self.rp3.scores(users))}
        if z["z_user_ease"] is None:
            z["z_user_ease"] = np.zeros_like(z["z_dlae"])
        s = z["z_dlae"] + self.hybrid.w_user * z["z_user_ease"]
        r, c = self.X[users].nonzero()
        s[r, c] = -np.inf
        cand = beyond.top_k(s, self.n_candidates)
        z["max_sim"] = max_similarity(self.X, users, cand, self.hybrid.dlae.B)
        return cand, z


def max_similarity(X: sp.csr_matrix, users: np.ndarray, cand: np.ndarray, B: np.ndarray) -> np.ndarray:
    """(U, K): the strongest single item-item weight from the user's history to each candidate.

    The linear scores sum over the history; the nearest neighbour says whether one strong
    reason or many weak ones put the candidate there.
    """
    out = np.zeros(cand.shape, np.float32)
    Xu = X[users].tocsr()
    for r in range(len(users)):
        h = Xu.indices[Xu.indptr[r]: Xu.indptr[r + 1]]
        if len(h):
            out[r] = B[np.ix_(h, cand[r])].max(0)
    return out


def candidate_features(X: sp.csr_matrix, users: np.ndarray, cand: np.ndarray, z: dict,
                       genres: np.ndarray, years: np.ndarray, times: TimeIndex | None = None) -> np.ndarray:
    """(U, K, len(FEATURES)) float32 features of each user's K candidates (pure function).

    X: the interactions the base models saw (users x items, 0/1); z: name -> (U, n_items) z-scores
    (rows aligned with `users`), plus "max_sim", already (U, K); genres/years: item side data;
    times: built from the same rows as X (without it the two time features are 0).
    """
    U, K = cand.shape
    rows = np.arange(U)[:, None]
    counts = np.asarray(X.sum(0)).ravel().astype(np.float64)
    pct = beyond.popularity_ranks(counts)
    log_pop = np.log1p(counts) / max(np.log1p(counts.max()), 1e-9)
    Xu = X[users]
    n_u = np.asarray(Xu.sum(1)).ravel()
    activity = np.log1p(n_u) / max(np.log1p(np.asarray(X.sum(1)).ravel().max()), 1e-9)
    prof = np.asarray(Xu @ genres) / np.maximum(n_u, 1)[:, None]  # share of the history in each genre
    g_c = genres[cand]  # (U, K, g)
    overlap = (g_c * prof[:, None, :]).sum(-1) / np.maximum(g_c.sum(-1), 1.0)
    mean_year = np.asarray(Xu @ years).ravel() / np.maximum(n_u, 1)
    gap = np.abs(years[cand] - mean_year[:, None]) / 10.0
    cols = {name: z[name][rows, cand] for name in ("z_dlae", "z_user_ease", "z_ease", "z_als", "z_rp3")}
    cols["max_sim"] = z["max_sim"] if "max_sim" in z else np.zeros((U, K))
    cols["log_rank"] = np.broadcast_to(np.log1p(np.arange(K)) / np.log1p(K), (U, K))
    cols["pop_pct"] = pct[cand]
    cols["log_pop"] = log_pop[cand]
    cols["user_activity"] = np.broadcast_to(activity[:, None], (U, K))
    cols["genre_overlap"] = overlap
    cols["year_gap"] = gap
    local = times.counts_in_window(users, cand) if times is not None else np.zeros((U, K))
    cols["local_pop"] = np.log1p(local) / max(np.log1p(counts.max()), 1e-9)
    cols["local_share"] = local / np.maximum(counts[cand], 1.0)
    return np.stack([cols[f] for f in FEATURES], axis=-1).astype(np.float32)


# ---------------------------------------------------------------- the ranker
class Ranker:
    """MLP over candidate features -> logit; standardises features with the training set's moments."""

    def __init__(self, config: RankerConfig | None = None):
        self.c = config or RankerConfig()

    def _net(self, n_in: int) -> nn.Module:
        layers, d = [], n_in
        for _ in range(self.c.layers):
            layers += [nn.Linear(d, self.c.hidden), nn.GELU()]
            d = self.c.hidden
        return nn.Sequential(*layers, nn.Linear(d, 1))

    def fit(self, F: np.ndarray, y: np.ndarray) -> Ranker:
        """F: (U, K, f) features of each user's candidates; y: (U, K) 0/1 labels."""
        if F.ndim != 3 or y.shape != F.shape[:2]:
            raise ValueError(f"features must be (users, candidates, f) and labels (users, candidates); "
                             f"got {F.shape} and {y.shape}")
        flat = F.reshape(-1, F.shape[-1])
        self.mu, self.sd = flat.mean(0), flat.std(0) + 1e-6
        g = torch.Generator().manual_seed(self.c.seed)
        torch.manual_seed(self.c.seed)
        self.net = self._net(F.shape[-1])
        Ft = torch.from_numpy((F - self.mu) / self.sd).float()
        yt = torch.from_numpy(np.asarray(y, np.float32))
        if self.c.loss == "listwise":  # users with nothing held out carry no listwise signal
            keep = torch.nonzero(yt.sum(1) > 0).squeeze(1)
            Ft, yt = Ft[keep], yt[keep]
        opt = torch.optim.Adam(self.net.parameters(), lr=self.c.lr, weight_decay=self.c.weight_decay)
        self.net.train()
        for _ in range(self.c.epochs):
            for b in torch.randperm(len(Ft), generator=g).split(self.c.batch_users):
                logit = self.net(Ft[b]).squeeze(-1)
                if self.c.loss == "listwise":
                    target = yt[b] / yt[b].sum(1, keepdim=True)
                    loss = -(target * torch.log_softmax(logit, 1)).sum(1).mean()
                elif self.c.loss == "bce":
                    loss = nn.functional.binary_cross_entropy_with_logits(logit, yt[b])
                else:
                    raise ValueError(f"unknown ranker loss {self.c.loss!r}; use 'bce' or 'listwise'")
                opt.zero_grad()
                loss.backward()
                opt.step()
        self.net.eval()
        return self

    def score(self, F: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.net(torch.from_numpy((F - self.mu) / self.sd).float()).squeeze(-1).numpy()


# ---------------------------------------------------------------- stacking
def carve(users: np.ndarray, items: np.ndarray, seed: int) -> np.ndarray:
    """A validation carve of *training* rows: boolean mask of its train part (stratified per item 75/25)."""
    from .splits import python_stratified_split

    return python_stratified_split(users, items, 0.75, "item", seed)


def examples(users: np.ndarray, items: np.ndarray, timestamps: np.ndarray, part: np.ndarray, n_users: int,
             n_items: int, base: BaseModels, genres: np.ndarray, years: np.ndarray):
    """Fit the base models on rows[part]; (features, labels, candidates, held matrix) for every user.

    Labels: the candidate is among rows[~part] (the carve's held part) for that user.
    """
    Xp = peers.binary_matrix(users[part], items[part], n_users, n_items)
    Yh = peers.binary_matrix(users[~part], items[~part], n_users, n_items)
    times = TimeIndex(users[part], items[part], timestamps[part], n_users, n_items)
    every = np.arange(n_users)
    base.fit(Xp)
    cand, z = base.candidates(every)
    F = candidate_features(Xp, every, cand, z, genres, years, times)
    y = (np.asarray(Yh[every[:, None], cand].todense()) > 0).astype(np.float32)
    return F, y, cand, Yh


class TwoStage:
    """Hybrid retrieval -> learned ranker. `fit(training rows)` learns on carves of them only."""

    name = "pocketrank two-stage"

    def __init__(self, base: BaseModels, ranker: RankerConfig, genres: np.ndarray, years: np.ndarray,
                 carve_seeds=(7, 8, 9)):
        self.base, self.rc, self.genres, self.years, self.carve_seeds = base, ranker, genres, years, carve_seeds

    def fit(self, users: np.ndarray, items: np.ndarray, timestamps: np.ndarray, n_users: int,
            n_items: int) -> TwoStage:
        """users/items/timestamps: the training rows only; the ranker never sees anything else."""
        Fs, ys = [], []
        for s in self.carve_seeds:
            part = carve(users, items, s)
            F, y, _, _ = examples(users, items, timestamps, part, n_users, n_items, self.base, self.genres,
                                  self.years)
            Fs.append(F)
            ys.append(y)
        self.ranker = Ranker(self.rc).fit(np.concatenate(Fs), np.concatenate(ys))
        self.X = peers.binary_matrix(users, items, n_users, n_items)
        self.times = TimeIndex(users, items, timestamps, n_users, n_items)
        self.base.fit(self.X)  # refit on all training rows for prediction
        return self

    def recommend(self, users: np.ndarray, k: int = 10) -> np.ndarray:
        """(len(users), k) item indices, best first; the user's training items never appear."""
        cand, z = self.base.candidates(users)
        F = candidate_features(self.X, users, cand, z, self.genres, self.years, self.times)
        return rerank_top(cand, self.ranker.score(F), k)


def rerank_top(cand: np.ndarray, s: np.ndarray, k: int = 10) -> np.ndarray:
    """Each row's candidates re-ordered by the ranker's scores, top k."""
    return np.take_along_axis(cand, np.argsort(-s, axis=1, kind="stable")[:, :k], 1)
