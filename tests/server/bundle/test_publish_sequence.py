"""A sequence model's published lists are retrieved with the vector the server answers with (its encoder)."""

from __future__ import annotations

import numpy as np
import pytest

from lab.homes import copy_home
from pocketrank.server.config import Config
from pocketrank.server.online.serving import Serving
from pocketrank.shared import wire

pytestmark = pytest.mark.slow  # the sequence home trains a model


def test_each_published_list_is_the_servers_retrieval_for_that_user(sequence_home, tmp_path):
    home = tmp_path / "home"
    copy_home(sequence_home, home)
    serving = Serving(Config(home=home))
    store = serving.store
    version = int(store.get_meta("bundle_version"))
    vr = serving.version_ranker(serving.live_version())
    assert vr.encoder is not None  # the server's vector is the encoder's
    users = store.user_ids()[:40]
    rows = store.records_at(version, users)
    dim = vr.ranker.catalogue.dim
    checked = 0
    for user_id in users:
        ctx = store.user_context(user_id, dim)
        uv = vr.user_vector(ctx)
        if uv is None:
            continue
        published, _ = wire.unpack_candidates(rows[user_id].blob)
        served = vr.ranker.retrieve(uv, store.consumed_items(user_id))
        assert set(published.tolist()) == set(served.tolist()), user_id
        checked += 1
    assert checked >= 30
    # and not the folded state's vector, which the lists were retrieved with before
    user_id = users[0]
    folded = store.user_state(user_id, dim)
    from pocketrank.shared.features import user_vector

    old = vr.ranker.retrieve(user_vector(folded), store.consumed_items(user_id))
    assert not np.array_equal(np.sort(old), np.sort(wire.unpack_candidates(rows[user_id].blob)[0]))
