"""`publish` above POCKETRANK_ANN_MIN_ITEMS builds each user's candidates through the ANN index."""

import numpy as np

from pocketrank.server.bundle.publish import publish_job
from pocketrank.server.config import Config
from pocketrank.server.home import Home
from pocketrank.server.online.catalogue import load_catalogue
from pocketrank.server.online.retrieval import retrieve
from pocketrank.shared import wire
from pocketrank.shared.features import user_vector


def test_publish_retrieves_through_the_index_and_keeps_the_exact_candidates(home):
    h = Home(home, config=Config(home=home, ann_min_items=1_000))  # MovieLens-100k: 1,682 products
    out = publish_job(h, progress=False)
    store = h.store()
    model_dir = h.model_dir(h.current_model(store))
    assert len(list((model_dir / "ann").glob("*.faiss"))) == 1  # built, and saved for the server
    cat = load_catalogue(store)
    users = sorted(store.user_ids())[:100]
    rows = store.records_at(out["version"], users)
    overlaps = []
    for user_id in users:
        got = wire.unpack_candidates_raw(wire.decompress(rows[user_id].blob))[0].tolist()
        consumed = store.consumed_items(user_id)
        exact = retrieve(cat, user_vector(store.user_state(user_id, cat.dim)), consumed, 200).tolist()
        assert len(got) == len(exact) and not consumed & set(got)
        overlaps.append(len(set(got) & set(exact)) / len(exact))
    assert np.mean(overlaps) >= 0.98 and min(overlaps) >= 0.9
