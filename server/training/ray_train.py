"""Training the sequence model data-parallel on CPU workers through Ray Train (`pocketrank train --ray-workers N`).

    result = fit_on_ray(train, config, tokens, val=(train, val), workers=2, address="local", storage=tmp)

Each worker runs seqtrain.fit itself (the single process's trainer) on its share of every epoch's
shuffled windows, with its step module wrapped by ray.train.torch.prepare_model (PyTorch DDP, gloo on
CPU): each backward averages the gradients over the workers, so the weights stay the same on every
worker, and a batch of batch_size / N per worker is one batch of batch_size. Each worker evaluates
the same weights, so they stop at the same epoch. The first worker reports the best weights as a Ray
Train checkpoint under `storage` (on a cluster: storage every node writes, e.g. the home on shared
storage); this process loads them into the model it returns.

Needs the 'ray' extra (`pip install 'pocketrank[ray]'`: ray[train]).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from pocketrank.shared.errors import ModelError, PocketrankError

from ..ray_tasks import ray_session
from .seqmodel import SeqConfig, SequenceRecommender
from .seqtrain import Histories, SeqTrainResult, fit

MODEL_FILE = "model.pt"


def fit_on_ray(train: Histories, c: SeqConfig, item_tokens: np.ndarray | None, val: tuple[Histories, np.ndarray] | None,
               workers: int, address: str, storage: Path) -> SeqTrainResult:
    """seqtrain.fit's result, trained by `workers` Ray Train workers (see the module)."""
    with ray_session(address):
        try:
            from ray.train import RunConfig, ScalingConfig
            from ray.train.torch import TorchTrainer
        except ImportError as exc:
            raise PocketrankError("training on Ray needs the 'ray' extra with Ray Train's dependencies: "
                                  f"pip install 'pocketrank[ray]' ({exc})") from exc
        storage.mkdir(parents=True, exist_ok=True)
        trainer = TorchTrainer(
            _worker, train_loop_config={"train": train, "config": c, "tokens": item_tokens, "val": val},
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=False),
            run_config=RunConfig(storage_path=str(storage.resolve()), name="sequence"))
        result = trainer.fit()
        if result.checkpoint is None:
            raise PocketrankError(f"Ray Train finished without the model's weights: {result.error}")
        with result.checkpoint.as_directory() as d:
            saved = torch.load(Path(d) / MODEL_FILE, weights_only=False)
    model = SequenceRecommender(c, item_tokens)
    model.load_state_dict(saved["state"])
    model.eval()
    return SeqTrainResult(model, saved["seconds"], saved["best_epoch"], saved["history"])


def _worker(cfg: dict) -> None:
    """One Ray Train worker: fit on its shard, DDP-wrapped; the first reports the weights as a checkpoint."""
    import ray.train
    import ray.train.torch

    torch.set_num_threads(1)  # one core a worker: several workers share a machine's cores
    ctx = ray.train.get_context()
    rank, workers = ctx.get_world_rank(), ctx.get_world_size()
    # find_unused_parameters: id dropout and masked positions leave some embedding rows out of a step.
    result = fit(cfg["train"], cfg["config"], cfg["tokens"], cfg["val"], progress=False, shard=(rank, workers),
                 wrap=lambda m: ray.train.torch.prepare_model(
                     m, parallel_strategy_kwargs={"find_unused_parameters": True}))
    # The weights must be the same on every worker (DDP broadcasts the first's at the start and every step
    # applies the same averaged gradients): checked, so a worker that went its own way fails the run.
    state = result.model.state_dict()
    if workers > 1:
        import torch.distributed as dist

        mine = torch.stack([v.double().sum() for v in state.values()]).sum().reshape(1)
        every = [torch.zeros_like(mine) for _ in range(workers)]
        dist.all_gather(every, mine)
        if any(not torch.equal(e, every[0]) for e in every):
            raise ModelError(f"the Ray Train workers ended with different weights ({[float(e) for e in every]})")
    metrics = {"best_epoch": result.best_epoch, "seconds": result.seconds}
    if rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as d:
        torch.save({"state": state, "seconds": result.seconds, "best_epoch": result.best_epoch,
                    "history": result.history}, Path(d) / MODEL_FILE)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))
