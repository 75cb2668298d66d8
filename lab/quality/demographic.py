"""A demographic linear model for cold users: profile fields -> the user's row of the interaction matrix.

A user with no events has only their profile (age band, gender, occupation;
MovieLens also has a zip code, whose first digit is a US region). The model is
a ridge regression, in closed form, from the one-hot profile (plus an intercept
and, optionally, pairwise crosses of the fields) to the user's binary row over
items, fitted on warm users:

    W = (D'D + lam I)^-1 D'X,    scores(new user) = d_user W

The intercept alone reproduces popularity (the mean row); the ridge shrinks
every field's effect toward it, so it is popularity adjusted by whatever the
profile says, and a user with unknown fields gets popularity.

    >>> import numpy as np, scipy.sparse as sp
    >>> X = sp.csr_matrix(np.array([[1, 0], [1, 0], [0, 1]], np.float32))
    >>> profiles = [{"gender": "F"}, {"gender": "F"}, {"gender": "M"}]
    >>> m = DemographicRidge(lam=0.1, fields=("gender",)).fit(profiles, X)
    >>> [int(np.argmax(m.scores([p])[0])) for p in ({"gender": "F"}, {"gender": "M"})]
    [0, 1]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from pocketrank.shared.errors import DataError

FIELDS = ("gender", "age_band", "occupation")


def zip_region(zip_code: str) -> str:
    """The first digit of a US zip code (a region of the country); "x" for anything else (Canada, blank)."""
    return zip_code[0] if zip_code[:1].isdigit() else "x"


def movielens_regions(path: Path | None = None) -> dict[str, str]:
    """External user id -> zip region, from MovieLens-100k's user file (the loader drops the zip)."""
    from pocketrank.server.data import movielens

    root = movielens.fetch(path)
    out = {}
    with open(root / "ml-100k.user", encoding="utf-8") as f:
        next(f)
        for line in f:
            uid, _age, _gender, _occupation, zip_code = line.rstrip("\n").split("\t")
            out[uid] = zip_region(zip_code)
    return out


class DemographicRidge:
    """Ridge map one-hot profile (+ pairwise crosses) -> interaction row; closed form."""

    def __init__(self, lam: float = 30.0, fields: Sequence[str] = FIELDS, crosses: bool = False):
        if lam <= 0:
            raise DataError(f"DemographicRidge needs lam > 0, got {lam}")
        self.lam, self.fields, self.crosses = float(lam), tuple(fields), crosses

    def design(self, profiles: Sequence[Mapping[str, str]]) -> np.ndarray:
        """(n, p) one-hot design: a column per field value seen in fit, crosses, then the intercept.

        A value not seen in fit (or a missing field) sets no column, so that
        field falls back to the intercept (popularity)."""
        blocks = []
        for f in self.fields:
            M = np.zeros((len(profiles), len(self.values[f])), np.float32)
            for r, p in enumerate(profiles):
                j = self.values[f].get(p.get(f))
                if j is not None:
                    M[r, j] = 1.0
            blocks.append(M)
        if self.crosses:
            base = list(blocks)
            for a in range(len(base)):
                for b in range(a + 1, len(base)):
                    blocks.append((base[a][:, :, None] * base[b][:, None, :]).reshape(len(profiles), -1))
        blocks.append(np.ones((len(profiles), 1), np.float32))
        return np.hstack(blocks)

    def fit(self, profiles: Sequence[Mapping[str, str]], X: sp.spmatrix) -> DemographicRidge:
        """profiles[r] is the profile of X's row r (warm users only)."""
        if len(profiles) != X.shape[0]:
            raise DataError(f"{len(profiles)} profiles for {X.shape[0]} interaction rows")
        if len(profiles) == 0:
            raise DataError("DemographicRidge needs at least one warm user")
        self.values = {f: {v: j for j, v in enumerate(sorted({p[f] for p in profiles if f in p}))}
                       for f in self.fields}
        D = self.design(profiles)
        A = D.T @ D + self.lam * np.eye(D.shape[1], dtype=np.float32)
        A[-1, -1] -= self.lam * (1 - 1e-6)  # the intercept is (almost) unpenalised: it is popularity
        DX = np.asarray((sp.csr_matrix(X).T @ D).T)
        self.W = np.linalg.solve(A.astype(np.float64), DX.astype(np.float64)).astype(np.float32)
        return self

    def scores(self, profiles: Sequence[Mapping[str, str]]) -> np.ndarray:
        """(n, n_items) scores for users known only by their profile."""
        return self.design(profiles) @ self.W
