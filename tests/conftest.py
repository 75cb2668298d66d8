"""Shared fixtures: one small model trained on the real MovieLens-100k, exported and published."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.homes import copy_home

TEST_EPOCHS = 2  # enough for meaningful rankings; quality is measured by the benchmark, not here


@pytest.fixture(scope="session")
def trained_home(tmp_path_factory) -> Path:
    from lab.homes import movielens_home

    # The fold model: most suites here were written against it and pin its behaviour (the device's
    # fold, the click-model ranker, schema migrations answering "edge" with no history). The sequence
    # model, the default `train` makes, has its own homes: `sequence_home` below and the modules
    # tests/server/jobs/test_sequence_job.py, tests/edge_runtime/test_sequence_device.py.
    return movielens_home(tmp_path_factory.mktemp("home"), TEST_EPOCHS, kind="fold").root


@pytest.fixture(scope="session")
def sequence_home(tmp_path_factory) -> Path:
    """MovieLens-100k with the sequence model (the default `pocketrank train`), exported and published."""
    from lab.homes import movielens_home

    return movielens_home(tmp_path_factory.mktemp("seq-home"), TEST_EPOCHS).root


@pytest.fixture
def home(trained_home, tmp_path) -> Path:
    """A private copy of the trained home, so a test may change it freely."""
    dst = tmp_path / "home"
    return copy_home(trained_home, dst)


@pytest.fixture
def public_key(trained_home) -> str:
    return (trained_home / "keys" / "signing.pub").read_text().strip()


@pytest.fixture
def app(home):
    from pocketrank.server.api.app import create_app
    from pocketrank.server.config import Config

    return create_app(Config(home=home))


@pytest.fixture
def api(app):
    return app.test_client()


@pytest.fixture
def device(app, home, tmp_path):
    """An EdgeClient wired to the Flask app in-process (httpx's WSGI transport)."""
    import httpx

    from pocketrank.edge_runtime import EdgeClient
    from pocketrank.edge_runtime.transport import Transport

    transport = Transport(client=httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://test"))
    key = (home / "keys" / "signing.pub").read_text().strip()
    client = EdgeClient(tmp_path / "device.sqlite", key, transport=transport, device_id="test-phone")
    yield client
    client.close()
