"""A ranker per model version: its vectors, its catalogue, its user vector."""

from __future__ import annotations

import numpy as np

from pocketrank.server.home import Home
from pocketrank.server.online.catalogue import Catalogue
from pocketrank.server.online.versions import Rankers, catalogue_for, save_vectors, version_vectors
from pocketrank.server.stores.base import UserContext, UserRecord, push_recent
from pocketrank.shared.features import fold_events, user_vector
from pocketrank.shared.schemas import Event
from tests.server.conftest import write_dot_ranker


def _base() -> Catalogue:
    ids = np.array([1, 2, 3, 4], dtype=np.int64)
    vecs = np.ones((4, 2), dtype=np.float32)  # the store's (another model's) vectors: never used below
    return Catalogue(ids, vecs, {i: True for i in range(1, 5)}, {1: "a", 2: "a", 3: "b", 4: "a"})


def test_vectors_round_trip_sorted_by_id(tmp_path):
    save_vectors(tmp_path, np.array([3, 1, 2]), np.array([[3, 3], [1, 1], [2, 2]], dtype=np.float32))
    ids, vecs = version_vectors(tmp_path)
    assert ids.tolist() == [1, 2, 3] and vecs[:, 0].tolist() == [1.0, 2.0, 3.0]


def test_a_product_newer_than_the_version_gets_its_category_centroid():
    # The version knows items 1, 2 (category a) and 3 (b), and an item 9 the store no longer has.
    ids = np.array([1, 2, 3, 9], dtype=np.int64)
    vecs = np.array([[1, 0], [3, 0], [0, 5], [7, 7]], dtype=np.float32)
    cat = catalogue_for(_base(), ids, vecs)
    assert cat.ids.tolist() == [1, 2, 3, 4]
    assert cat.vectors.tolist() == [[1, 0], [3, 0], [0, 5], [2, 0]]  # item 4 (a): mean of 1 and 2


def test_a_non_native_version_folds_the_users_recent_events_with_its_own_vectors(tmp_path):
    home = Home(tmp_path)
    write_dot_ranker(home.model_dir("m2") / "ranker.fp32.onnx", dim=2)
    save_vectors(home.model_dir("m2"), np.array([1, 2, 3]), np.array([[1, 0], [0, 1], [1, 1]], dtype=np.float32))
    vr = Rankers(home).get("m2", _base(), native=False)
    recent = np.zeros(0, dtype=UserRecord.empty(2).recent.dtype)
    for n, (etype, item) in enumerate([("click", 1), ("impression", 2), ("purchase", 3)]):
        recent = push_recent(recent, Event(f"e{n}", "u", "d", etype, float(n), item), 50)
    record = UserRecord.empty(2)
    record.recent = recent
    uv = vr.user_vector(UserContext(record, set(), None))
    expected = user_vector(fold_events([("click", np.array([1, 0])), ("impression", np.array([0, 1])),
                                        ("purchase", np.array([1, 1]))], 2))
    np.testing.assert_allclose(uv, expected, rtol=1e-6)
    assert vr.user_vector(UserContext(UserRecord.empty(2), set(), None)) is None  # nothing to fold yet
    assert vr.ranker.rank(uv, 2, set())[0][0] == 3  # retrieval and scoring in the version's space
