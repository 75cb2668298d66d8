"""The store's event log as per-user item sequences: what `pocketrank train` learns from.

Whatever the marketplace imported (its own catalogue and events, or MovieLens
through its importer) is read the same way: events that carry a product and
say the user chose it (view, click, add_to_cart, purchase; not impressions,
not searches), in time order, ties in log order (the order they were
imported or received), optionally limited to a time window. A product the
user touches several times in a row (a view, then a click, then a purchase)
counts once there, with the type and time of the run's last event (the
purchase, not the view before it): the sequence is of products, and repeating
the same one would teach the model that the next product is the one just seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pocketrank.shared.errors import DataError

TRAINING_TYPES = ("view", "click", "add_to_cart", "purchase")


@dataclass
class History:
    """Model rows are 0-based; `item_index[row]` is the store's index of that product."""

    item_index: np.ndarray  # (n_items,) int64, ascending
    user_ids: list[str]
    seqs: list[np.ndarray]  # per user, model rows, oldest first
    types: list[np.ndarray]  # per user, the TYPE_CODE (pocketrank.server.stores.base) of each product's event, int8
    times: list[np.ndarray]  # per user, the timestamp of each product's event, float64
    events: int  # log events read (before collapsing repeats)
    first_ts: float
    last_ts: float

    @property
    def n_items(self) -> int:
        return len(self.item_index)


def load_history(store, since: float | None = None, until: float | None = None,
                 types: tuple[str, ...] = TRAINING_TYPES) -> History:
    """Per-user sequences from the store's log; DataError when there is nothing to learn from."""
    users, items, ts, codes = store.interactions(types, since, until)
    if len(items) == 0:
        window = "" if since is None and until is None else " in the chosen time window"
        raise DataError(f"the store holds no {'/'.join(types)} events{window}; import some first: "
                        "`pocketrank import events FILE` (after `pocketrank import catalogue FILE`) "
                        "or `pocketrank import movielens`")
    user_ids, u = np.unique(users, return_inverse=True)
    item_index, rows = np.unique(items, return_inverse=True)
    order = np.argsort(u, kind="stable")  # stable: keeps time (then log) order inside each user
    u, rows, t, c = u[order], rows[order], ts[order], codes[order]
    keep = np.ones(len(rows), dtype=bool)  # the last event of each run of one product
    keep[:-1] = (u[1:] != u[:-1]) | (rows[1:] != rows[:-1])
    u, rows, t, c = u[keep], rows[keep], t[keep], c[keep]
    bounds = np.searchsorted(u, np.arange(len(user_ids) + 1))
    cut = range(len(user_ids))
    return History(item_index.astype(np.int64), [str(x) for x in user_ids],
                   [rows[bounds[k]: bounds[k + 1]].astype(np.int64) for k in cut],
                   [c[bounds[k]: bounds[k + 1]] for k in cut], [t[bounds[k]: bounds[k + 1]] for k in cut],
                   int(len(items)), float(ts.min()), float(ts.max()))
