"""The cold-start bench's co-occurrence peer reads the warm users' ratings as a users x products 0/1 matrix."""

import numpy as np
import pyarrow as pa

from bench._shipped_cold import _cooccurrence


def test_the_cooccurrence_matrix_counts_each_user_once_per_product():
    events = pa.table({"user_id": ["a", "a", "a", "b", "b", "c"], "item_id": ["x", "y", "x", "x", "z", "y"]})
    m = _cooccurrence(events, {"x": 1, "y": 2, "z": 3}, 4)
    assert m.shape == (3, 4) and m.max() == 1.0  # "a" rated x twice: one co-rating
    co = np.asarray((m.T.tocsr() @ m[:, 1]).todense()).ravel()  # the users who rated x, per product
    assert co.tolist() == [0.0, 2.0, 1.0, 1.0]
