"""`publish` on Ray (users partitioned over tasks) writes the same bytes as the single process."""

from __future__ import annotations

import dataclasses
import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from lab.homes import copy_home
from pocketrank.server.bundle.publish import publish_job
from pocketrank.server.config import Config
from pocketrank.server.home import Home
from pocketrank.shared.errors import PocketrankError

NOW = 1_790_000_000.0


def _files(bundle: Path) -> dict[str, bytes]:
    return {str(p.relative_to(bundle)): p.read_bytes() for p in sorted(bundle.rglob("*")) if p.is_file()}


def _change_some(root: Path) -> None:
    """Give 20 users another user's state and 3 products a new price, so their records and entries change at
    the next publish and the others' do not."""
    store = Home(root).store()
    users = store.user_ids()[:21]
    records = store.user_records(users, 64)
    store.put_user_records({u: records[users[i + 1]] for i, u in enumerate(users[:-1])})
    store.put_items([dataclasses.replace(it, price=it.price + 1) for it in store.get_items([5, 500, 1500]).values()])
    store.close()


def _published(root: Path, version: int) -> tuple[dict[str, bytes], dict, dict]:
    """Everything a publish wrote: the bundle's files, and the store's record rows and signatures."""
    store = Home(root).store()
    users = store.user_ids()
    rows = {u: (r.version, r.blob, r.sha256, r.sig) for u, r in store.records_at(version, users).items()}
    sigs = store.record_sigs(version, users)
    store.close()
    return _files(root / "bundles" / str(version)), rows, sigs


def test_publish_on_ray_is_byte_identical_to_one_process(trained_home, tmp_path, ray_local):
    single, on_ray = tmp_path / "single", tmp_path / "ray"
    copy_home(trained_home, single)
    copy_home(trained_home, on_ray)
    for root in (single, on_ray):
        _change_some(root)
    # ann_min_items below MovieLens' 1,682 products: candidates come from the ANN index the driver saves
    # and each worker loads.
    config = {"ann_min_items": 1_000}
    a = publish_job(Home(single, Config(home=single, **config)), progress=False, now=NOW)
    b = publish_job(Home(on_ray, Config(home=on_ray, ray_address="local", **config)), progress=False, now=NOW)
    timings = ("sign_us_per_record", "seconds")
    assert {k: v for k, v in a.items() if k not in timings} == {k: v for k, v in b.items() if k not in timings}
    # Both paths of each step taken: changed records and signature-only ones, new entries and kept ones.
    assert 0 < a["records_changed"] <= 20 < a["users"] and a["items_changed"] == 3
    files_a, rows_a, sigs_a = _published(single, a["version"])
    files_b, rows_b, sigs_b = _published(on_ray, b["version"])
    assert {"manifest.json", "manifest.sig"} <= set(files_a)
    assert files_a == files_b
    assert len(rows_a) == a["users"] and rows_a == rows_b
    assert len(sigs_a) == a["users"] and sigs_a == sigs_b


def test_publish_command_takes_a_ray_address(home, ray_local):
    from pocketrank.cli import main

    result = CliRunner().invoke(main, ["publish", "--home", str(home), "--ray-address", "local", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert '"users": 943' in result.output


def test_without_ray_installed_the_error_names_the_extra(home, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where it is not installed
    with pytest.raises(PocketrankError, match=r"needs the 'ray' extra .*pip install 'pocketrank\[ray\]'"):
        publish_job(Home(home), progress=False, ray_address="local")


def _synthetic_home(config: Config, keys: Path | None) -> Home:
    """The seeded synthetic catalogue (tests/server/conftest.py) with 60 users, a dot-product ranker and
    placeholder artifacts: a publishable home in either store, no training run."""
    import json

    import numpy as np

    from pocketrank.server.stores.base import UserRecord
    from pocketrank.shared.features import UserState
    from tests.server.conftest import DIM, MODEL, seed_store

    home = Home(config.home, config)
    store = home.store()
    items, _ = seed_store(store, config.home)
    rng = np.random.default_rng(1)
    users = {f"user-{u:03d}": UserRecord(UserState(rng.normal(size=DIM).astype(np.float32), 1.0, 5))
             for u in range(60)}
    consumed = {u: {int(i) for i in rng.choice(len(items), 5, replace=False) + 1} for u in users}
    store.reset_derived(users, consumed, {i: i % 7 for i in range(1, len(items) + 1)}, 0)
    store.close()
    model = config.home / "models" / MODEL
    (model / "ranker.int8.onnx").write_bytes((model / "ranker.fp32.onnx").read_bytes())
    (model / "encoder.onnx").write_bytes(b"an encoder")
    (model / "export.json").write_text(json.dumps({
        "opset": 18, "exporter": "test", "quantization": {"method": "none"}, "parity": {},
        "encoder": {"inputs": ["items", "weights"], "outputs": ["user"], "precision": "fp32", "parity": {}}}))
    if keys is not None:
        shutil.copytree(keys, home.keys)
    return home


@pytest.fixture
def two_configs(backend, tmp_path, request):
    """Two empty homes of the backend (Redis: two key prefixes, removed after)."""
    import uuid

    if backend == "sqlite":
        yield [Config(home=tmp_path / n) for n in ("a", "b")]
        return
    from pocketrank.server.stores.redis import RedisStore

    url = request.getfixturevalue("redis_url")
    prefixes = [f"test-ray-{uuid.uuid4().hex[:8]}:" for _ in range(2)]
    yield [Config(home=tmp_path / n, store="redis", redis_url=url, redis_prefix=p) for n, p in zip("ab", prefixes)]
    r = RedisStore(url, prefixes[0]).r
    for p in prefixes:
        keys = list(r.scan_iter(match=p.encode() + b"*", count=10_000))
        for i in range(0, len(keys), 10_000):
            r.unlink(*keys[i:i + 10_000])
    r.close()


def test_ray_tasks_read_either_store(two_configs, ray_local):
    """The tasks open the store the configuration names (SQLite in the home, or Redis) and publish the same bytes."""
    from pocketrank.server.bundle.model_artifacts import load_signer

    single = _synthetic_home(two_configs[0], None)
    load_signer(single)
    on_ray = _synthetic_home(dataclasses.replace(two_configs[1], ray_address="local"), single.keys)
    a = publish_job(single, progress=False, now=NOW)
    b = publish_job(on_ray, progress=False, now=NOW)
    assert a["users"] == b["users"] == 60 and a["records_changed"] == 60 and a["items_changed"] == 300
    assert _files(single.bundle_dir(1)) == _files(on_ray.bundle_dir(1))
    rows = []
    for home in (single, on_ray):
        store = home.store()
        users = store.user_ids()
        rows.append((users, {u: (r.blob, r.sha256, r.sig) for u, r in store.records_at(1, users).items()}))
        store.close()
    assert rows[0] == rows[1] and len(rows[0][1]) == 60
