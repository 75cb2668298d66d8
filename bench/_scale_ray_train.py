"""`bench scale` section `ray_train`: `pocketrank train` in one process against Ray Train with 1 and 2 workers.

    python -m bench scale -- --only ray_train                          # MovieLens-1M, 10 epochs a run
    python -m bench scale -- --only ray_train --train-size 100k --train-epochs 60   # to early stopping

Each run is the shipped path of bench quality (bench/_shipped.py) on the same split (seed, ties ordered
by that seed's permutation, each user's newest rating held out): import, `train` (the sequence model;
`ray_workers` 0, 1 or 2), `export`, `publish`, then the server's answers for every user, ranked over the
whole catalogue. The quality is the server's HR@10 / nDCG@10 on the held-out ratings; the wall time is
train_job's (Ray's start included, the import and the rest not).

The runs are capped at the same number of epochs (`--train-epochs`; early stopping still applies):
training MovieLens-1M to early stopping takes about two hours per run on this 2-core machine, so the
default compares the first 10 epochs of the same recipe. The one process runs torch on its default
threads (both cores); each Ray worker runs on one thread, so 1 worker has half the cores the one
process has, and 2 workers have both.
"""

from __future__ import annotations


def log(msg: str) -> None:
    print(msg, flush=True)


RUNS = (("one process (default)", 0), ("Ray Train, 1 worker", 1), ("Ray Train, 2 workers", 2))
# The bar: the one process's quality within 1%. A model trained on 2 workers is a different model
# (other dropout draws), so it lands above or below; the check is that neither the test nor the validation
# nDCG@10 falls more than 1% below, and the table prints both ratios.
TOLERANCE = 0.01


def ray_train_section(args) -> str:
    from bench import _shipped

    size, seed, epochs = args.train_size, args.train_seed, args.train_epochs
    rows = []
    for name, workers in RUNS:
        log(f"  {name}: MovieLens-{size}, seed {seed}, at most {epochs} epochs")
        out = _shipped.run(size, seed, with_peers=False, log=lambda m: log("  " + m),
                           train={"epochs": epochs, "ray_workers": workers})
        rows.append({"name": name, "train": out["timings"]["train"], "epoch": out["best_epoch"], "val": out["val_nDCG@10"],
                     **{k: out["server"][k] for k in ("HR@10", "nDCG@10")}})
    return report(rows, size, seed, epochs)


def report(rows: list[dict], size: str, seed: int, epochs: int) -> str:
    base = rows[0]
    lines = [
        f"### Measured: training on Ray Train (`python -m bench scale -- --only ray_train --train-size {size} "
        f"--train-epochs {epochs}`)",
        "",
        f"MovieLens-{size}, seed {seed}, the shipped path (import, train, export, publish, the server's answers "
        f"for every user over the whole catalogue), the same recipe capped at {epochs} epochs in every run. "
        "Quality: the server's HR@10 / nDCG@10 on each user's held-out newest rating; ratio: to the one "
        "process's. Train: train_job's wall time (Ray's start included).",
        "",
        "| run | train | speed-up | best epoch | val nDCG@10 (ratio) | HR@10 | nDCG@10 | nDCG@10 ratio | "
        "no more than 1% below |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        ratio = r["nDCG@10"] / base["nDCG@10"] if base["nDCG@10"] else float("nan")
        val = r["val"] / base["val"] if base["val"] else float("nan")
        lines.append(f"| {r['name']} | {r['train']:.0f} s | {base['train'] / r['train']:.2f}x | {r['epoch']} | "
                     f"{r['val']:.4f} ({val:.3f}) | {r['HR@10']:.4f} | {r['nDCG@10']:.4f} | {ratio:.3f} | "
                     f"{'yes' if min(ratio, val) >= 1 - TOLERANCE else 'no'} |")
    return "\n".join(lines)
