"""`python -m bench train_memory`: peak memory of training on a large marketplace (issue 15's memory goal).

    python -m bench train_memory                         # 100,000 products, 10,000,000 events
    python -m bench train_memory -- --events 1000000 --items 20000 --epochs 1   # a quick look

A simulated shop (lab/sim_files.py: string SKUs, ISO-8601 times, impressions, searches, clicks, carts and
purchases) of N products and M events, written once as Parquet under the data cache; then, each its own
`pocketrank` process on a fresh SQLite home, as a marketplace would run them: `import catalogue`,
`import events`, `train` (the shipped sequence model, capped at `--epochs`: the peak is reached in the
first epoch and at the evaluation after it; later epochs reuse the same buffers) and `train --model fold`.
The peak RSS of each process (wait4's ru_maxrss) is printed beside the goal (under 8 GB for training).

Above 50,000 products the sequence model trains with a sampled softmax (1,024 shared negatives, logQ
corrected), so no step holds a positions x catalogue matrix; nothing builds a products x products one.
Simulated data: for memory and speed only, never for judging quality.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench._sections import write_section
from bench.imports import DOCS, _maps, run_steps

RSS_GOAL = 8 * 1024**3


def shop(n_events: int, n_items: int) -> tuple[Path, Path]:
    """(catalogue, events) Parquet files of the simulated shop, written once into the data cache."""
    from lab.sim_files import write_marketplace
    from lab.simulator import MarketplaceSimulator, SimConfig
    from pocketrank.server.data.movielens import cache_dir

    users = max(2000, n_events // (30 * 5))  # about 5.5 events per user per day at these settings
    folder = cache_dir().parent / "bench" / f"shop-{n_events}-{users}-{n_items}" / "parquet"
    if not (folder / "done").exists():
        t0 = time.perf_counter()
        print(f"  writing {n_events:,} simulated events over {n_items:,} products into {folder} ...", flush=True)
        write_marketplace(MarketplaceSimulator(SimConfig(n_users=users, n_items=n_items, n_days=30, seed=11)),
                          folder, "parquet", limit=n_events)
        (folder / "done").write_text("ok")
        print(f"  ... {time.perf_counter() - t0:.0f} s", flush=True)
    return folder / "catalogue.parquet", folder / "events.parquet"


def measure(n_events: int, n_items: int, epochs: int) -> list[dict]:
    from lab.sim_files import CATALOGUE_MAP, EVENTS_MAP

    catalogue, events = shop(n_events, n_items)
    home = Path(tempfile.mkdtemp(prefix="pocketrank-train-memory-"))
    rows = []
    try:
        steps = (("import catalogue", ["import", "catalogue", str(catalogue), "--no-progress", *_maps(CATALOGUE_MAP)]),
                 ("import events", ["import", "events", str(events), "--no-progress", *_maps(EVENTS_MAP)]),
                 ("train (sequence)", ["train", "--epochs", str(epochs)]),
                 ("train --model fold", ["train", "--model", "fold", "--epochs", str(epochs)]))
        for name, wall, rss in run_steps(home, steps):
            rows.append({"step": name, "seconds": wall, "peak_rss": rss})
            goal = "" if not name.startswith("train") else \
                f"  goal < 8 GB: {'met' if rss < RSS_GOAL else 'NOT met'}"
            print(f"  {name:20s} {wall:8.1f} s  peak RSS {rss / 1024**2:8,.0f} MB{goal}", flush=True)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench train_memory", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=10_000_000)
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--epochs", type=int, default=1, help="training epochs at most (the peak is in the first)")
    p.add_argument("--no-write", action="store_true", help="do not rewrite the section of docs/benchmarks.md")
    args = p.parse_args(argv)
    load = os.getloadavg()[0]
    print(f"training memory: {args.items:,} products, {args.events:,} simulated events, "
          f"{args.epochs} epoch(s); load {load:.1f} at start", flush=True)
    rows = measure(args.events, args.items, args.epochs)
    ok = all(r["peak_rss"] < RSS_GOAL for r in rows if r["step"].startswith("train"))
    print(f"training peaks under 8 GB: {'yes' if ok else 'NO'}", flush=True)
    if not args.no_write:
        write_section(DOCS, "train-memory", report(rows, args, load, ok))
        print(f"wrote the train-memory section of {DOCS}", flush=True)
    return 0 if ok else 1


def report(rows: list[dict], args, load: float, ok: bool) -> str:
    lines = ["## Training memory (`python -m bench train_memory`)", "",
             f"A simulated shop of {args.items:,} products and {args.events:,} events (impressions, searches, "
             "clicks, carts, purchases; Parquet), each step its own `pocketrank` process on a fresh SQLite home; "
             f"training capped at {args.epochs} epoch(s) (the peak comes in the first epoch and its evaluation). "
             "Peak RSS: the process's own high-water mark (VmHWM). Above 50,000 products the sequence model "
             f"trains with a sampled softmax. Load {load:.1f} at the start on 2 cores.", "",
             "| step | seconds | peak RSS | goal |", "| --- | ---: | ---: | --- |"]
    for r in rows:
        goal = f"< 8 GB: {'met' if r['peak_rss'] < RSS_GOAL else '**not met**'}" if r["step"].startswith("train") else ""
        lines.append(f"| `{r['step']}` | {r['seconds']:.1f} | {r['peak_rss'] / 1024**2:,.0f} MB | {goal} |")
    lines += ["", f"Training peaks under 8 GB: {'yes' if ok else '**no**'}."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
