"""Fixtures for the server's stores and real-time layer: a real redis-server and small synthetic homes.

The synthetic home has a seeded catalogue of random vectors and an ONNX ranker
that scores sigmoid(<user, item>), so these tests need no training run.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from pocketrank.shared.schemas import Item
from tests.factories import dot_ranker, free_port, product

DIM = 64
CATEGORIES = ("Books", "Garden", "Music", "Toys", "Tools", "Pets")
MODEL = "synthetic-1"


def write_dot_ranker(path: Path, dim: int = DIM) -> None:
    """An ONNX model with the ranker's signature: scores = sigmoid(items @ user^T)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(dot_ranker(dim))


def synthetic_catalogue(n_items: int = 300, seed: int = 0) -> tuple[list[Item], dict[int, np.ndarray]]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(CATEGORIES), DIM))
    items, vectors = [], {}
    for i in range(1, n_items + 1):
        c = i % len(CATEGORIES)
        items.append(product(i, CATEGORIES[c], f"{CATEGORIES[c]} thing {i}", float(5 + i % 50)))
        v = centres[c] + 0.5 * rng.normal(size=DIM)
        vectors[i] = (v / np.linalg.norm(v)).astype(np.float32)
    return items, vectors


def seed_store(store, home: Path, n_items: int = 300) -> tuple[list[Item], dict[int, np.ndarray]]:
    items, vectors = synthetic_catalogue(n_items)
    store.put_items(items, vectors)
    store.set_meta("current_model", MODEL)
    write_dot_ranker(Path(home) / "models" / MODEL / "ranker.fp32.onnx")
    return items, vectors


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> str:
    """A real redis-server: CI's (POCKETRANK_TEST_REDIS_URL, started by .ci/run) or a private one."""
    url = os.environ.get("POCKETRANK_TEST_REDIS_URL")
    if url:
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("no redis-server binary on this machine (apt-get install redis-server); CI installs it")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir),
                             "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail(f"redis-server did not start on port {port}")
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory) -> str:
    """A real 3-master Redis Cluster on free loopback ports (bench/_redis_cluster.py), torn down after the session."""
    from bench._redis_cluster import ClusterUnavailable, LocalCluster

    try:
        cluster = LocalCluster(tmp_path_factory.mktemp("redis-cluster"))
    except ClusterUnavailable as exc:
        pytest.skip(str(exc))
    with cluster:
        yield cluster.url


@pytest.fixture(params=["sqlite", "redis"])
def backend(request) -> str:
    return request.param


@pytest.fixture
def store_config(backend, tmp_path, request):
    """A Config for a fresh, empty store of each backend (a unique Redis key prefix per test); "redis-cluster"
    is the Redis store on a Redis Cluster, for the modules that parametrize `backend` with it."""
    from pocketrank.server.config import Config

    if backend == "redis":
        url = request.getfixturevalue("redis_url")
        prefix = f"test-{uuid.uuid4().hex[:8]}:"
        yield Config(home=tmp_path / "home", store="redis", redis_url=url, redis_prefix=prefix)
        from pocketrank.server.stores.redis import RedisStore

        r = RedisStore(url, prefix).r
        keys = list(r.scan_iter(match=prefix.encode() + b"*", count=10_000))
        for i in range(0, len(keys), 10_000):
            r.unlink(*keys[i:i + 10_000])
        r.close()
    elif backend == "redis-cluster":
        url = request.getfixturevalue("redis_cluster_url")
        prefix = f"test-{uuid.uuid4().hex[:8]}:"
        yield Config(home=tmp_path / "home", store="redis", redis_url=url, redis_prefix=prefix, redis_cluster=True)
        from pocketrank.server.stores.redis_cluster import RedisClusterStore

        rc = RedisClusterStore(url, prefix).r
        for key in list(rc.scan_iter(match=prefix.encode() + b"*", count=10_000)):
            rc.unlink(key)
        rc.close()
    else:
        yield Config(home=tmp_path / "home")


@pytest.fixture
def store(store_config):
    from pocketrank.server.stores import open_store

    s = open_store(store_config)
    yield s
    s.close()


@pytest.fixture
def synthetic_app(store_config):
    """A Flask app on a seeded synthetic catalogue, on each backend."""
    from pocketrank.server.api.app import create_app
    from pocketrank.server.stores import open_store

    s = open_store(store_config)
    seed_store(s, store_config.home)
    s.close()
    return create_app(store_config)


@pytest.fixture(scope="module")
def ray_local():
    """A real local Ray with 2 worker CPUs for one test module (starting one takes seconds); jobs given
    ray_address="local" use it instead of starting their own."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
