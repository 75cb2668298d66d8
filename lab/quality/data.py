"""Interactions as flat arrays in their source order.

The order matters for protocol 1: Microsoft Recommenders draws one random
number per row of `u.data` in file order, so reproducing its split needs the
rows as the file has them (recbole's `ml-100k.inter` keeps u.data's order).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pocketrank.server.training.sequences import user_sequences
from pocketrank.shared.errors import DataError


@dataclass
class Interactions:
    users: np.ndarray  # int64 user index per row
    items: np.ndarray  # int64 item index per row
    timestamps: np.ndarray  # float64 per row
    user_ids: np.ndarray  # str, index -> external id
    item_ids: np.ndarray  # str, index -> external id
    ratings: np.ndarray | None = None
    user_features: dict[str, dict[str, str]] = field(default_factory=dict)  # external id -> fields
    item_text: dict[str, tuple[list[str], int | None, str]] = field(default_factory=dict)  # genres, year, title

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def __len__(self) -> int:
        return len(self.users)

    def subset(self, mask: np.ndarray) -> Interactions:
        """Rows where mask holds, same index spaces (ids keep their indices)."""
        return Interactions(self.users[mask], self.items[mask], self.timestamps[mask], self.user_ids,
                            self.item_ids, None if self.ratings is None else self.ratings[mask],
                            self.user_features, self.item_text)


def _index(values: list[str]) -> tuple[np.ndarray, np.ndarray]:
    ids, inverse = np.unique(np.asarray(values, dtype=str), return_inverse=True)
    return ids, inverse.astype(np.int64)


def movielens_100k(path: Path | None = None) -> Interactions:
    """MovieLens-100k ratings in u.data's row order, with user and item side data."""
    from pocketrank.server.data import movielens

    root = movielens.fetch(path)
    raw = np.loadtxt(root / "ml-100k.inter", skiprows=1, dtype=np.int64, delimiter="\t")
    users = [str(u) for u in raw[:, 0]]
    items = [str(i) for i in raw[:, 1]]
    user_ids, u_idx = _index(users)
    item_ids, i_idx = _index(items)
    ml = movielens.load(path)
    feats = dict(ml.user_features)
    text = {str(it.item_id): (list(it.categories or (it.category,)), it.year, it.title) for it in ml.catalogue}
    return Interactions(u_idx, i_idx, raw[:, 3].astype(np.float64), user_ids, item_ids,
                        raw[:, 2].astype(np.float32), feats, text)


def read_csv(path: Path) -> Interactions:
    """A user_id,item_id,timestamp[,rating,...] CSV; ids are strings; extra columns are ignored."""
    path = Path(path)
    try:
        f = open(path, newline="", encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot read interactions file {path}: {exc}") from exc
    with f:
        reader = csv.DictReader(f)
        need = {"user_id", "item_id", "timestamp"}
        if reader.fieldnames is None or not need <= set(reader.fieldnames):
            raise DataError(f"{path} needs a header with columns user_id,item_id,timestamp "
                            f"(found {reader.fieldnames}); ids may be any strings")
        users, items, ts, ratings = [], [], [], []
        has_rating = "rating" in reader.fieldnames
        for n, row in enumerate(reader, start=2):
            try:
                ts.append(float(row["timestamp"]))
                ratings.append(float(row["rating"]) if has_rating and row["rating"] not in (None, "") else 1.0)
            except ValueError as exc:
                raise DataError(f"{path} line {n}: timestamp/rating must be numbers ({exc})") from exc
            users.append(row["user_id"])
            items.append(row["item_id"])
    if not users:
        raise DataError(f"{path} has no interactions")
    user_ids, u_idx = _index(users)
    item_ids, i_idx = _index(items)
    return Interactions(u_idx, i_idx, np.asarray(ts), user_ids, item_ids, np.asarray(ratings, np.float32))


def time_sorted_sequences(data: Interactions) -> list[np.ndarray]:
    """One item-index array per user, oldest first (ties: by item index, as pocketrank.server.data.movielens)."""
    order = np.lexsort((data.items, data.users, data.timestamps))
    return user_sequences(data.users[order], data.items[order], data.n_users)
