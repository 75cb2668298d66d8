"""Retrieval through the ANN index: the exact scan's answer, exclusions kept, new products found at once."""

from __future__ import annotations

import time

import numpy as np
import pytest

from lab.catalogue_vectors import synthetic_catalogue
from pocketrank.server.online import ann
from pocketrank.server.online.ann import AnnIndex, AnnIndexes, AnnSlot, view_of
from pocketrank.server.online.catalogue import Catalogue
from pocketrank.server.online.ranker import Ranker, onnx_session
from tests.server.conftest import write_dot_ranker

N = 2_000


@pytest.fixture(scope="module")
def data():
    return synthetic_catalogue(N, n_users=40, seed=3, items_per_category=100)


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    path = tmp_path_factory.mktemp("ranker") / "ranker.fp32.onnx"
    write_dot_ranker(path)
    return onnx_session(path)


def catalogue(vectors: np.ndarray, ids: np.ndarray | None = None, out_of_stock=()) -> Catalogue:
    ids = np.arange(1, len(vectors) + 1, dtype=np.int64) if ids is None else ids
    stock = {int(i): int(i) not in set(out_of_stock) for i in ids}
    return Catalogue(ids, vectors, stock, {int(i): "c" for i in ids})


def rankers(cat: Catalogue, session, min_items: int = 100):
    view = AnnIndexes(min_items, background=False).view("m", cat.ids, cat.vectors)
    return Ranker(cat, session, ann=view), Ranker(cat, session)


def test_the_ann_path_returns_the_exact_top_k_after_excluding_the_history(data, session):
    cat = catalogue(data.items)
    fast, exact = rankers(cat, session)
    assert fast.ann is not None and fast.ann.current() is not None and exact.ann is None
    recalls = []
    for uv, hist in zip(data.users, data.history):
        exclude = set((hist + 1).tolist())  # ids are rows + 1
        got, want = fast.retrieve(uv, exclude, n=200), exact.retrieve(uv, exclude, n=200)
        assert len(got) == 200 and not exclude & set(got.tolist())
        assert got[:20].tolist() == want[:20].tolist()  # what a user is shown: the exact answer
        scores = cat.vectors[got - 1] @ uv
        assert (np.diff(scores) <= 0).all()  # best first, by the exact inner product
        recalls.append(len(set(got.tolist()) & set(want.tolist())) / 200)
    # HNSW is approximate even here: a few of the 200 (well below the top 20) may be missed.
    assert min(recalls) >= 0.98 and np.mean(recalls) >= 0.995


def test_out_of_stock_items_never_come_back(data, session):
    uv = data.users[0]
    top = np.argsort(-(data.items @ uv))[:30] + 1  # the user's 30 best items are out of stock
    cat = catalogue(data.items, out_of_stock=top.tolist())
    fast, exact = rankers(cat, session)
    got = fast.retrieve(uv, set(), n=100, in_stock_only=True)
    assert len(got) == 100 and not set(top.tolist()) & set(got.tolist())
    assert got.tolist() == exact.retrieve(uv, set(), n=100, in_stock_only=True).tolist()


def test_below_the_threshold_retrieval_stays_exact(data):
    assert AnnIndexes(N + 1).view("m", np.arange(N), data.items) is None
    assert AnnIndexes(0).view("m", np.arange(N), data.items) is None  # 0: never


def test_the_server_builds_its_first_index_off_the_request_path(data):
    live = AnnIndexes(100).view("m", np.arange(N, dtype=np.int64), data.items)  # background, as Serving's
    assert live is not None
    deadline = time.monotonic() + 60
    while live.current() is None:  # meanwhile retrieval scans exactly
        assert time.monotonic() < deadline, "the index was never built"
        time.sleep(0.05)
    assert len(live.current().fresh) == 0


def test_a_product_added_after_the_build_is_retrieved_at_once(data, session):
    slot = AnnSlot(background=False)
    ids = np.arange(1, N + 1, dtype=np.int64)
    slot.view(ids, data.items)  # the index, built on the catalogue before the product arrived
    uv = data.users[5]
    new = (2.0 * uv / np.linalg.norm(uv) * np.linalg.norm(data.items, axis=1).max()).astype(np.float32)
    ids2 = np.append(ids, N + 7)
    vectors2 = np.vstack([data.items, new])
    view = slot.view(ids2, vectors2)
    assert view.fresh.tolist() == [N]  # not in the graph: scanned exactly beside it
    ranker = Ranker(catalogue(vectors2, ids2), session, ann=view)
    assert ranker.retrieve(uv, set(), n=10)[0] == N + 7


def test_a_changed_vector_is_scored_as_it_is_now(data, session):
    ids = np.arange(1, N + 1, dtype=np.int64)
    index = AnnIndex(ids, data.items)
    uv = data.users[1]
    worst = int(np.argmin(data.items @ uv))
    vectors = data.items.copy()
    vectors[worst] = 3 * uv / np.linalg.norm(uv) * np.linalg.norm(data.items, axis=1).max()  # re-estimated
    view = view_of(index, ids, vectors)
    assert view.fresh.tolist() == [worst]
    assert Ranker(catalogue(vectors, ids), session, ann=view).retrieve(uv, set(), n=5)[0] == worst + 1


def test_many_new_rows_rebuild_the_index(data, monkeypatch):
    monkeypatch.setattr(ann, "REBUILD_SHARE", 0.05)
    slot = AnnSlot(background=False)
    half = N // 2
    first = slot.view(np.arange(half, dtype=np.int64), data.items[:half])
    view = slot.view(np.arange(N, dtype=np.int64), data.items)  # half the catalogue is new: rebuilt
    assert view.index is not first.index and len(view.fresh) == 0


def test_an_index_is_saved_once_and_loaded_by_the_next_process(data, tmp_path):
    ids = np.arange(N, dtype=np.int64)
    built = AnnIndex.build_or_load(ids, data.items, tmp_path)
    assert len(list(tmp_path.glob("*.faiss"))) == 1
    loaded = AnnIndex.build_or_load(ids, data.items, tmp_path)
    for uv in data.users[:5]:
        assert sorted(loaded.search(uv, 50).tolist()) == sorted(built.search(uv, 50).tolist())
    (next(tmp_path.glob("*.faiss"))).write_bytes(b"torn")  # a damaged file is rebuilt, not fatal
    assert len(AnnIndex.build_or_load(ids, data.items, tmp_path).search(data.users[0], 10)) == 10
