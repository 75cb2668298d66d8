"""One training step of the sequence model at MovieLens-1M's shapes: plain torch against what ships.

    python -m bench train_step                  # 1 and 2 threads; rewrites its section of docs/benchmarks.md
    python -m bench train_step -- --no-write --steps 20

A step is what `pocketrank train` runs per batch (server/training/seqtrain.fit): 128 windows of 50 events,
the item table with id dropout, the encoder, the loss over all 3,706 products, backward and AdamW.
- plain: `F.cross_entropy(h @ items.T, target)` and `nn.Dropout`, the textbook form;
- shipped: `softmax_loss.softmax_cross_entropy` (chunked, gradients made in cache) and `seqmodel.MaskDropout`.
Both run the same model and batch from the same weights. On the shipped path's first step the plain loss is
computed too, on the same positions, to show the two compute the same thing. The median step of each, and
their ratio, side by side in one run.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from bench._sections import write_section

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
N_ITEMS, N_TOKENS, BATCH, LENGTH = 3706, 4000, 128, 50  # MovieLens-1M's catalogue, the default batch and window
TOKENS_PER_ITEM = 8


def _model(plain: bool):
    import torch
    from torch import nn

    from pocketrank.server.training.seqmodel import MaskDropout, SeqConfig, SequenceRecommender
    from pocketrank.server.training.seqtrain import TrainStep

    torch.manual_seed(0)
    tokens = np.random.default_rng(0).integers(0, N_TOKENS, (N_ITEMS, TOKENS_PER_ITEM))
    model = SequenceRecommender(SeqConfig(n_items=N_ITEMS, n_tokens=N_TOKENS), tokens)
    if plain:
        for parent in list(model.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, MaskDropout):
                    setattr(parent, name, nn.Dropout(child.p))
    return TrainStep(model)


def _batch():
    import torch

    g = torch.Generator().manual_seed(1)
    x = torch.randint(1, N_ITEMS + 1, (BATCH, LENGTH), generator=g)
    return x, torch.randint(1, 4, (BATCH, LENGTH), generator=g), torch.randint(0, 8, (BATCH, LENGTH), generator=g), \
        torch.randint(1, N_ITEMS + 1, (BATCH, LENGTH), generator=g)


def time_steps(plain: bool, steps: int, threads: int) -> tuple[float, float]:
    """(median seconds a step after 3 warm-up steps, |chunked - plain| loss on the first step: 0 for plain)."""
    import torch
    import torch.nn.functional as F

    from pocketrank.server.training.softmax_loss import softmax_cross_entropy

    torch.set_num_threads(threads)
    step = _model(plain)
    opt = torch.optim.AdamW(step.parameters(), lr=2e-3)
    x, types, gaps, y = _batch()
    keep = y > 0
    times, gap = [], 0.0
    for n in range(steps + 3):
        t = time.perf_counter()
        table, hid = step(x, types, gaps, 0.1)
        h, target = hid[keep], y[keep] - 1
        loss = F.cross_entropy(h @ table[1:].T, target) if plain else softmax_cross_entropy(h, table[1:], target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if n == 0 and not plain:
            with torch.no_grad():
                gap = abs(float(loss) - float(F.cross_entropy(h @ table[1:].T, target)))
        if n >= 3:
            times.append(time.perf_counter() - t)
    return float(np.median(times)), gap


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench train_step", description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = ap.parse_args(argv)
    load = os.getloadavg()
    rows = []
    for threads in (1, 2):
        plain, _ = time_steps(True, args.steps, threads)
        shipped, gap = time_steps(False, args.steps, threads)
        rows.append((threads, plain, shipped, gap))
        print(f"  {threads} thread(s): plain {plain * 1000:.0f} ms, shipped {shipped * 1000:.0f} ms, "
              f"{plain / shipped:.2f}x; |chunked - plain loss| {gap:.1e}", flush=True)
    lines = ["## A training step, plain torch against what ships (`python -m bench train_step`)", "",
             f"The sequence model at MovieLens-1M's shapes ({N_ITEMS:,} products, {BATCH} windows of {LENGTH} events, "
             "dim 64, 2 layers): forward, the full-softmax loss, backward, AdamW. Plain: `F.cross_entropy` over the "
             "(positions x products) logits and `nn.Dropout`; shipped: the chunked loss of "
             "`server/training/softmax_loss.py` and `seqmodel.MaskDropout`. Median of "
             f"{args.steps} steps after 3 warm-up steps; 1-minute load average {load[0]:.2f} at the start"
             f"{' (above 2: other jobs shared the cores)' if load[0] > 2 else ''}.", "",
             "| threads | plain step | shipped step | speed-up | \\|chunked - plain\\| loss, same step |",
             "| ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {t} | {p * 1000:.0f} ms | {s * 1000:.0f} ms | **{p / s:.2f}x** | {g:.1e} |" for t, p, s, g in rows]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section(DOCS, "train_step", text)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
