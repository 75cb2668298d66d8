"""Fixtures for fault tests: a real server on loopback and a misbehaving proxy in front of it."""

from __future__ import annotations

import pytest

from pocketrank.demo_app.netproxy import NetProxy

from .liveserver import LiveServer


@pytest.fixture
def live_server(home):
    # Many short syncs from one loopback address: the per-device rate limit is not under test here.
    server = LiveServer(home, sync_rate=0.0)
    yield server
    server.close()


@pytest.fixture
def proxy(live_server):
    p = NetProxy(("127.0.0.1", live_server.port), delay=0.0, loss=0.0).start()
    yield p
    p.close()
