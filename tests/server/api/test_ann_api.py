"""A catalogue above POCKETRANK_ANN_MIN_ITEMS: served through the ANN index, new products included."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from server.online.ranker import Ranker
from tests.server.conftest import seed_store


@pytest.fixture
def app(store_config):
    from server.api.app import create_app
    from server.stores import open_store

    config = dataclasses.replace(store_config, ann_min_items=100)  # the synthetic catalogue has 300 products
    s = open_store(config)
    seed_store(s, config.home)
    s.close()
    return create_app(config)


def test_a_product_added_through_the_api_is_retrieved_through_the_index(app):
    api, serving = app.test_client(), app.extensions["pocketrank"]
    serving.refresh()
    assert serving.ranker is not None and serving.ranker.ann is not None  # the ANN path serves
    built = serving.ranker.ann.index
    item = {"item_id": "new-garden-hose", "title": "Garden hose", "category": "Garden", "price": 12.0}
    assert api.post("/v1/items", json={"items": [item]}).get_json()["created"] == 1
    serving.refresh()
    ranker, cat = serving.ranker, serving.catalogue
    assert ranker.ann is not None and ranker.ann.index is built  # no rebuild for one product
    new = cat.index_of["new-garden-hose"]
    assert np.searchsorted(cat.ids, new) in ranker.ann.fresh  # scanned beside the graph
    uv = cat.vector_map()[new]  # a user whose taste is the new product's (a Garden centroid) vector
    got = ranker.retrieve(uv, set(), n=50)
    assert new in got.tolist()
    assert got.tolist() == Ranker(cat, ranker.session).retrieve(uv, set(), n=50).tolist()  # as the exact scan
    body = api.get("/v1/items/new-garden-hose").get_json()
    assert body["has_vector"] and body["provisional"]
