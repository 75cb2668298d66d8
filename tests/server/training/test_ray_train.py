"""Training the sequence model on Ray Train workers (DDP on CPU): one worker is the single process's
training; two workers average their gradients into one model of the same quality."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pocketrank.server.training.ray_train import fit_on_ray
from pocketrank.server.training.seqmodel import SeqConfig
from pocketrank.server.training.seqtrain import Histories, fit, rank_metrics

N_ITEMS, CLUSTERS = 120, 6


def _histories(n_users: int = 240, length: int = 14, seed: int = 0) -> tuple[Histories, np.ndarray]:
    """Users who walk through one cluster of products in order, so the next product is learnable; the
    last product of each walk is held out as the validation target."""
    rng = np.random.default_rng(seed)
    size = N_ITEMS // CLUSTERS
    rows, types, times, targets = [], [], [], []
    for _ in range(n_users):
        c, start = rng.integers(CLUSTERS), rng.integers(size)
        walk = (c * size + (start + np.arange(length + 1)) % size).astype(np.int64)
        rows.append(walk[:-1])
        types.append(np.ones(length, np.int64))
        times.append(1_700_000_000.0 + 60.0 * np.arange(length))
        targets.append(walk[-1])
    return Histories(rows, types, times), np.array(targets)


def _config(epochs: int = 6, full_softmax_max: int = 50_000) -> SeqConfig:
    return SeqConfig(n_items=N_ITEMS, dim=16, layers=1, heads=2, max_len=8, batch_size=64, epochs=epochs,
                     patience=100, lr=5e-3, seed=3, full_softmax_max=full_softmax_max, negatives=32)


@pytest.fixture(scope="module")
def data():
    return _histories()


@pytest.mark.slow
@pytest.mark.parametrize("full_softmax_max", [50_000, 40])  # 40: the sampled softmax, its step's rows only
def test_one_ray_worker_trains_the_single_process_model(data, ray_local, tmp_path, full_softmax_max):
    train, targets = data
    config = _config(2, full_softmax_max)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the worker does: sums taken in another order differ in the last bits, and grow
    try:
        alone = fit(train, config, val=(train, targets), progress=False)
    finally:
        torch.set_num_threads(threads)
    ray1 = fit_on_ray(train, config, None, (train, targets), workers=1, address="local", storage=tmp_path)
    assert ray1.best_epoch == alone.best_epoch
    for (name, a), b in zip(alone.model.state_dict().items(), ray1.model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-5), name


@pytest.mark.slow
def test_two_ray_workers_train_one_model_as_good(data, ray_local, tmp_path):
    train, targets = data
    alone = fit(train, _config(), val=(train, targets), progress=False)
    two = fit_on_ray(train, _config(), None, (train, targets), workers=2, address="local", storage=tmp_path)
    a = rank_metrics(alone.model, train, targets)["nDCG@10"]
    b = rank_metrics(two.model, train, targets)["nDCG@10"]
    chance = 10 / N_ITEMS
    assert a > 3 * chance and b > 3 * chance  # both learnt the walks
    assert abs(a - b) <= 0.25 * a, (a, b)
    assert len(two.history) == 6 and two.history[-1]["loss"] < two.history[0]["loss"]


@pytest.mark.slow
def test_train_command_on_ray_workers(ray_local, tmp_path):
    """`pocketrank train --ray-workers 2` on a tiny home: the model is trained, saved and made current."""
    import json

    from click.testing import CliRunner

    from pocketrank.cli import main
    from pocketrank.server.home import Home

    train, _ = _histories(n_users=60, length=12)
    (tmp_path / "products.csv").write_text("item_id,title,category\n" + "".join(
        f"P{i},Product {i},Cluster {i // (N_ITEMS // CLUSTERS)}\n" for i in range(N_ITEMS)))
    (tmp_path / "events.csv").write_text("user_id,item_id,type,timestamp\n" + "".join(
        f"u{u},P{r},click,{int(t)}\n" for u, (rows, times) in enumerate(zip(train.rows, train.times))
        for r, t in zip(rows, times)))
    root = tmp_path / "home"
    runner = CliRunner()
    for args in (["import", "catalogue", str(tmp_path / "products.csv")], ["import", "events", str(tmp_path / "events.csv")],
                 ["train", "--epochs", "2", "--ray-workers", "2", "--ray-address", "local"]):
        result = runner.invoke(main, [*args, "--home", str(root), "--no-progress"])
        assert result.exit_code == 0, result.output
    home = Home(root)
    version = home.current_model()
    metrics = json.loads((home.model_dir(version) / "metrics.json").read_text())
    assert metrics["ray_workers"] == 2 and len(metrics["history"]) == 2
