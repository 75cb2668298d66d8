"""A sequence model on a real EdgeClient: the device's encoder over its own history agrees with the server's,
and the device's own events change its ranking at once, offline."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from lab.homes import copy_home
from pocketrank.edge_runtime import EdgeClient
from pocketrank.edge_runtime.transport import Transport
from pocketrank.server.config import Config

pytestmark = pytest.mark.slow
USERS = [str(u) for u in range(1, 41)]


@pytest.fixture(scope="module")
def seq_published(tmp_path_factory):
    from lab.homes import movielens_home

    return movielens_home(tmp_path_factory.mktemp("seq-published"), 2, kind="sequence", n_users=150).root


@pytest.fixture
def stack(seq_published, tmp_path):
    from pocketrank.server.api.app import create_app

    home = tmp_path / "home"
    copy_home(seq_published, home)
    app = create_app(Config(home=home))
    transport = Transport(client=httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://test"))
    key = (home / "keys" / "signing.pub").read_text().strip()
    client = EdgeClient(tmp_path / "device.sqlite", key, transport=transport, device_id="seq-phone")
    yield app, client
    client.close()


def _server_vector(app, user):
    serving = app.extensions["pocketrank"]
    serving.refresh()
    vr = serving.version_ranker(serving.model_version)
    return vr.user_vector(serving.store.user_context(user, serving.catalogue.dim))


def test_device_encoder_matches_the_server(stack):
    app, client = stack
    client.sync(USERS)
    snap = client.cache.snapshot()
    assert (snap.manifest.get("model") or {}).get("kind") == "sequence"
    close = 0
    for u in USERS:
        dev = client.local.user_vector(snap, u)
        srv = _server_vector(app, u)
        assert dev is not None and srv is not None
        # int8 on the device, fp32 on the server: the vectors point the same way.
        cos = float(dev @ srv / (np.linalg.norm(dev) * np.linalg.norm(srv)))
        close += cos > 0.99
    assert close == len(USERS)
    rec = client.local.recommend(USERS[0], 10)
    assert rec.source == "edge" and len(rec.items) == 10


def test_offline_events_move_the_device_ranking_and_reach_the_server_once(stack):
    app, client = stack
    client.sync(USERS[:5])
    user = USERS[0]
    before = [it.item_id for it in client.local.recommend(user, 10).items]
    # Offline: three clicks on what the list put last.
    for it in before[-3:]:
        client.track(user, "click", it)
    after = [it.item_id for it in client.local.recommend(user, 10).items]
    assert after != before and not set(after) & set(before[-3:])
    dev = client.local.user_vector(client.cache.snapshot(), user)
    # Back online: the upload, then the server's history has the clicks and its vector agrees again.
    flushed = client.flush()
    assert flushed.acknowledged == 3
    srv = _server_vector(app, user)
    assert float(dev @ srv / (np.linalg.norm(dev) * np.linalg.norm(srv))) > 0.99
    client.sync([user])
    assert client.flush().acknowledged == 0
    again = client.local.user_vector(client.cache.snapshot(), user)
    assert float(again @ srv / (np.linalg.norm(again) * np.linalg.norm(srv))) > 0.99
