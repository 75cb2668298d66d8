"""Importing a marketplace's files, timed: throughput, peak memory, and MovieLens-1M to a bundle.

    python -m bench imports                    # 10 M simulated events x 3 formats, then MovieLens-1M
    python -m bench imports -- --events 1000000 --no-write
    python -m bench imports -- --skip-1m

1. The simulator's shop (lab/sim_files.py: string SKUs, ISO-8601 times with a zone, the shop's
   own column names) is written once as Parquet, CSV and JSON Lines into the bench cache
   (~/.cache/pocketrank/bench, reused while its settings match). Each file is imported with the
   real command, `pocketrank import events FILE --map ...`, in a fresh home on the embedded SQLite
   store (catalogue imported first, not timed), as its own process: events/s is the accepted
   events over the import's wall time as the report gives it; peak RSS is the process's own
   (its VmHWM, written by the child at exit), so it includes Python, pyarrow and SQLite's page cache.
2. MovieLens-1M: `pocketrank import movielens --size 1m`, then `train`, `export`, `publish`, each
   a process, timed by stage.

Goals (issue 14): Parquet >= 500,000 events/s, CSV >= 150,000 events/s, peak RSS < 2 GB, JSON
Lines reported; MovieLens-1M import under 30 s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._sections import write_section

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"
GOALS = {"parquet": 500_000, "csv": 150_000}
RSS_GOAL = 2 * 1024**3


# The child reports its own peak: wait4's ru_maxrss would carry the parent's high-water mark over the
# fork and exec (Linux keeps the larger of the two), so a bench that has just simulated a big shop would
# see its own size in every child's figure. VmHWM is the new program's own, from its first page.
_PEAK = """import atexit, os, re, runpy, sys
def _peak():
    with open("/proc/self/status") as f:
        kb = int(re.search(r"VmHWM:\\s+(\\d+)", f.read()).group(1))
    with open(os.environ["BENCH_PEAK_FILE"], "w") as out:
        out.write(str(kb * 1024))
atexit.register(_peak)
sys.argv = ["pocketrank", *sys.argv[1:]]
runpy.run_module("pocketrank", run_name="__main__", alter_sys=True)
"""


def _run(args: list[str], home: Path) -> tuple[float, int, str]:
    """(wall seconds, peak RSS bytes, stdout) of `python -m pocketrank ARGS` as its own process."""
    fd, peak_file = tempfile.mkstemp(prefix="pocketrank-peak-")
    os.close(fd)
    env = {**os.environ, "POCKETRANK_HOME": str(home), "POCKETRANK_STORE": "sqlite", "BENCH_PEAK_FILE": peak_file}
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:  # err: progress bars, kept off the page
        proc = subprocess.Popen([sys.executable, "-c", _PEAK, *args], stdout=out, stderr=err, env=env, cwd=ROOT)
        _, status, _usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        text, problems = out.read().decode(), err.read().decode(errors="replace")
    peak = Path(peak_file).read_text().strip() or "0"  # empty: the child died before its atexit
    os.unlink(peak_file)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"pocketrank {' '.join(args)} failed:\n{text[-2000:]}\n{problems[-2000:]}")
    return seconds, int(peak), text


def run_steps(home: Path, steps):
    """Each (name, pocketrank ARGS) step in turn on `home`, as its own process: yields (name, wall s, peak RSS B)."""
    for name, args in steps:
        wall, rss, _out = _run(args, home)
        yield name, wall, rss


def _files(n_events: int) -> dict[str, tuple[Path, Path]]:
    from lab.sim_files import write_marketplace
    from lab.simulator import MarketplaceSimulator, SimConfig
    from pocketrank.server.data.movielens import cache_dir

    # Enough users and days for n_events (about 5.5 events per user per day at these settings).
    users = max(2000, n_events // (30 * 5))
    config = SimConfig(n_users=users, n_items=20_000, n_days=30, seed=11)
    folder = cache_dir().parent / "bench" / f"shop-{n_events}-{users}"
    out = {}
    for fmt in ("parquet", "csv", "jsonl"):
        done = folder / fmt / "done"
        if not done.exists():
            t0 = time.perf_counter()
            print(f"  writing {n_events:,} simulated events as {fmt} into {folder / fmt} ...", flush=True)
            write_marketplace(MarketplaceSimulator(config), folder / fmt, fmt, limit=n_events)
            done.write_text("ok")
            print(f"  ... {time.perf_counter() - t0:.0f} s", flush=True)
        ext = {"parquet": "parquet", "csv": "csv", "jsonl": "jsonl"}[fmt]
        out[fmt] = (folder / fmt / f"catalogue.{ext}", folder / fmt / f"events.{ext}")
    return out


def _maps(mapping: dict[str, str]) -> list[str]:
    return [a for k, v in mapping.items() for a in ("--map", f"{k}={v}")]


def imports(n_events: int) -> list[dict]:
    from lab.sim_files import CATALOGUE_MAP, EVENTS_MAP

    rows = []
    for fmt, (catalogue, events) in _files(n_events).items():
        home = Path(tempfile.mkdtemp(prefix=f"pocketrank-import-{fmt}-"))
        try:
            _run(["import", "catalogue", str(catalogue), "--no-progress", *_maps(CATALOGUE_MAP)], home)
            wall, rss, out = _run(["import", "events", str(events), "--no-progress", "--json", *_maps(EVENTS_MAP)],
                                  home)
            report = json.loads(out)
            size = events.stat().st_size
        finally:
            shutil.rmtree(home, ignore_errors=True)
        rate = report["accepted"] / report["seconds"] if report["seconds"] else 0.0
        rows.append({"format": fmt, "events": report["accepted"], "rejected": report["rejected"],
                     "seconds": report["seconds"], "process_seconds": wall, "events_per_s": rate,
                     "peak_rss": rss, "file_bytes": size, "goal": GOALS.get(fmt)})
        print(f"  {fmt:8s} {report['accepted']:>11,} events in {report['seconds']:6.1f} s = {rate:>9,.0f}/s"
              f" (process {wall:.1f} s, peak RSS {rss / 1024**2:,.0f} MB, file {size / 1024**2:,.0f} MB)"
              + (f"  goal >= {GOALS[fmt]:,}/s: {'met' if rate >= GOALS[fmt] else 'NOT met'}" if fmt in GOALS else ""),
              flush=True)
    return rows


def movielens_1m(epochs: int) -> list[tuple[str, float]]:
    home = Path(tempfile.mkdtemp(prefix="pocketrank-ml1m-"))
    stages = []
    try:
        _run(["data", "fetch", "--size", "1m"], home)  # the download is not the import
        for name, wall, _rss in run_steps(home, (("import", ["import", "movielens", "--size", "1m", "--no-progress"]),
                                                 ("train", ["train", "--epochs", str(epochs)]),
                                                 ("export", ["export"]),
                                                 ("publish", ["publish"]))):
            stages.append((name, wall))
            print(f"  MovieLens-1M {name}: {wall:.1f} s", flush=True)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return stages


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench imports", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=10_000_000)
    p.add_argument("--epochs", type=int, default=8, help="MovieLens-1M training epochs")
    p.add_argument("--skip-1m", action="store_true")
    p.add_argument("--no-write", action="store_true", help="do not rewrite the section of docs/benchmarks.md")
    args = p.parse_args(argv)
    load = os.getloadavg()[0]
    print(f"import throughput, {args.events:,} simulated events per format (load {load:.1f} at start)", flush=True)
    rows = imports(args.events)
    stages = [] if args.skip_1m else movielens_1m(args.epochs)
    ok = all(r["events_per_s"] >= r["goal"] for r in rows if r["goal"]) and all(r["peak_rss"] < RSS_GOAL for r in rows)
    ml_import = dict(stages).get("import")
    if ml_import is not None:
        ok = ok and ml_import < 30
    lines = ["## Importing files (`python -m bench imports`)", "",
             f"{args.events:,} simulated events (string SKUs, ISO-8601 times with a zone, the shop's own column "
             "names mapped with --map), `pocketrank import events` into a fresh SQLite home, one process each; "
             f"2 cores, load {load:.1f} at start.", "",
             "| format | events/s | goal | peak RSS | file | seconds |", "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        goal = f">= {r['goal']:,}" if r["goal"] else "reported"
        lines.append(f"| {r['format']} | {r['events_per_s']:,.0f} | {goal} | {r['peak_rss'] / 1024**2:,.0f} MB "
                     f"(goal < 2,048) | {r['file_bytes'] / 1024**2:,.0f} MB | {r['seconds']:.1f} |")
    if stages:
        lines += ["", "MovieLens-1M, each stage its own `pocketrank` process: "
                  + ", ".join(f"{n} {s:.1f} s" for n, s in stages)
                  + f"; total {sum(s for _, s in stages):.0f} s (import goal < 30 s)."]
    text = "\n".join(lines)
    print("\n" + text)
    if not args.no_write:
        write_section(DOCS, "imports", text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
