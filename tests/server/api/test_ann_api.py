"""A catalogue above POCKETRANK_ANN_MIN_ITEMS: served through the ANN index, new products included."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

from pocketrank.server.online.ranker import Ranker
from tests.server.conftest import seed_store


@pytest.fixture
def app(store_config):
    from pocketrank.server.api.app import create_app
    from pocketrank.server.stores import open_store

    config = dataclasses.replace(store_config, ann_min_items=100)  # the synthetic catalogue has 300 products
    s = open_store(config)
    seed_store(s, config.home)
    s.close()
    return create_app(config)


def test_a_product_added_through_the_api_is_retrieved_through_the_index(app):
    api, serving = app.test_client(), app.extensions["pocketrank"]
    serving.refresh()
    assert serving.ranker is not None and serving.ranker.ann is not None  # the ANN path serves...
    deadline = time.monotonic() + 60
    while serving.ranker.ann.current() is None:  # ...once its index, started when the server did, is built
        assert time.monotonic() < deadline, "the server never built its index"
        time.sleep(0.05)
    built = serving.ranker.ann.current().index
    item = {"item_id": "new-garden-hose", "title": "Garden hose", "category": "Garden", "price": 12.0}
    assert api.post("/v1/items", json={"items": [item]}).get_json()["created"] == 1
    serving.refresh()
    ranker, cat = serving.ranker, serving.catalogue
    view = ranker.ann.current() if ranker.ann is not None else None
    assert view is not None and view.index is built  # no rebuild for one product
    new = cat.index_of["new-garden-hose"]
    assert np.searchsorted(cat.ids, new) in view.fresh  # scanned beside the graph
    uv = cat.vector_map()[new]  # a user whose taste is the new product's (a Garden centroid) vector
    got = ranker.retrieve(uv, set(), n=50)
    assert new in got.tolist()
    assert got.tolist() == Ranker(cat, ranker.session).retrieve(uv, set(), n=50).tolist()  # as the exact scan
    body = api.get("/v1/items/new-garden-hose").get_json()
    assert body["has_vector"] and body["provisional"]
