"""`make demo`: the whole loop on real MovieLens-100k data, told as a story with figures.

Run from a terminal, the story then starts the clickable phone app (see
demo_app/stack.py); `--serve` goes straight to the app, `--no-serve` never does.

fetch -> train -> export -> publish -> server on loopback -> a device syncs and
gets server recommendations -> the server goes away -> the device reranks
locally and reacts to its own clicks -> the server comes back -> the queued
events upload exactly once.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pocketrank.edge_runtime import EdgeClient, Recommendation

from .localserver import LocalServer, published

DEMO_USER = "196"  # the first user in MovieLens-100k's ratings file


def _step(title: str, args: list[str], home: Path, out) -> float:
    out(f"\n== {title}: pocketrank {' '.join(args)}")
    start = time.perf_counter()
    env = {**os.environ, "POCKETRANK_HOME": str(home)}
    proc = subprocess.run([sys.executable, "-m", "pocketrank", *args], env=env)
    if proc.returncode != 0:
        raise SystemExit(f"step '{title}' failed with exit code {proc.returncode}")
    return time.perf_counter() - start


def _show(rec: Recommendation, out, n: int = 5) -> None:
    out(f"   source={rec.source} model={rec.model_version} candidates=v{rec.candidates_version} "
        f"latency={rec.latency_ms:.1f} ms" + (f"  (server skipped: {rec.reason[:70]})" if rec.reason else ""))
    for it in rec.items[:n]:
        out(f"   {it.rank:2d}. {it.title[:48]:48s} {it.category:12s} {it.score:.4f}")


def story(server: LocalServer, client: EdgeClient, user_id: str, out=print, k: int = 10) -> dict:
    """The device's story; returns the figures and lists the test asserts on."""
    report: dict = {}
    sync = client.sync([user_id])
    report["sync_bytes"] = sync.bytes_downloaded
    out(f"\n== device syncs bundle v{sync.version}: {sync.bytes_downloaded:,} bytes "
        f"({', '.join(sync.artifacts_fetched)})")

    online = client.recommend(user_id, k)
    report["online"] = online
    out(f"\n== online: recommendations for user {user_id}")
    _show(online, out)

    server.stop()
    out("\n== the server is gone (stopped)")
    offline = client.recommend(user_id, k)
    report["offline_before"] = offline
    _show(offline, out)

    # The user clicks three of the offline suggestions; the on-device state
    # folds each click and the local rerank follows at once.
    clicked = [it.item_id for it in offline.items[2:5]]
    report["clicked"] = clicked
    report["event_ids"] = [client.track(user_id, "click", item_id) for item_id in clicked]
    after = client.recommend(user_id, k)
    report["offline_after"] = after
    out(f"\n== offline, after clicking {', '.join(str(i) for i in clicked)} on the device")
    _show(after, out)

    times = []
    for _ in range(50):
        t = time.perf_counter()
        client.recommend(user_id, k, allow_server=False)
        times.append((time.perf_counter() - t) * 1000)
    report["rerank_ms_median"] = statistics.median(times)
    out(f"   local rerank of {k} from cached candidates: median {report['rerank_ms_median']:.2f} ms over 50 runs")
    report["queued"] = client.status()["outbox"]
    out(f"   events queued on the device: {report['queued']}")

    server.start()
    out("\n== the server is back")
    # What an app does on the OS's "network is back" signal: retry now, not after the backoff.
    client.reset_backoff()
    flushed = client.flush()
    report["flush"] = flushed
    out(f"   uploaded {flushed.sent}, acknowledged {flushed.acknowledged}, remaining {flushed.remaining}")
    again = client.flush()
    report["flush_again"] = again
    back = client.recommend(user_id, k)
    report["online_after"] = back
    _show(back, out)
    return report


def prepare(home: Path | None = None, epochs: int | None = None, out=print, only_if_missing: bool = False,
            timings: dict | None = None) -> Path:
    """import -> train -> export -> publish into `home` (default var/demo); returns its absolute path."""
    home = Path(home or Path("var") / "demo").resolve()
    if only_if_missing and published(home):
        return home
    home.mkdir(parents=True, exist_ok=True)
    timings = {} if timings is None else timings
    timings["import"] = _step("import MovieLens-100k (pinned recbole wheel, sha256-checked) into the store",
                              ["import", "movielens", "--size", "100k", "--no-progress"], home, out)
    timings["train"] = _step("train the sequence model (item tower + event encoder; stops early on validation)",
                             ["train"] + ([] if epochs is None else ["--epochs", str(epochs)]), home, out)
    timings["export"] = _step("export fp32 + int8 ONNX, parity gates", ["export"], home, out)
    timings["publish"] = _step("publish a signed bundle", ["publish"], home, out)
    return home


def run(home: Path | None = None, epochs: int | None = None, out=print) -> int:
    total = time.perf_counter()
    timings: dict = {}
    home = prepare(home, epochs, out, timings=timings)
    public_key = (home / "keys" / "signing.pub").read_text().strip()
    with tempfile.TemporaryDirectory() as tmp, LocalServer(home) as server:
        out(f"\n== server on {server.url} (POCKETRANK_HOME={home})")
        client = EdgeClient(Path(tmp) / "device.sqlite", public_key, base_url=server.url, device_id="demo-phone")
        report = story(server, client, DEMO_USER, out)
        client.close()
        with sqlite3.connect(home / "store.sqlite") as db:
            ids = report["event_ids"]
            n = db.execute(f"SELECT COUNT(*) FROM events WHERE event_id IN ({','.join('?' * len(ids))})",
                           ids).fetchone()[0]
    models = sorted((home / "models").iterdir())[-1]
    out("\n== summary")
    out(f"   training {timings['train']:.1f} s (incl. start-up), export {timings['export']:.1f} s, "
        f"publish {timings['publish']:.1f} s")
    out(f"   model sizes: torch {(models / 'model.pt').stat().st_size:,} B; on the device: "
        + ", ".join(f"{name} {(models / name).stat().st_size:,} B" for name in ("encoder.onnx", "ranker.int8.onnx")
                    if (models / name).exists()))
    metrics = json.loads((models / "metrics.json").read_text())
    test = metrics["evaluation"]["test"]
    out("   test (each user's last product, full ranking): " + "; ".join(
        f"{name} HR@10 {m['HR@10']:.4f} nDCG@10 {m['nDCG@10']:.4f}" for name, m in test.items()))
    out(f"   first sync {report['sync_bytes']:,} B; local rerank median {report['rerank_ms_median']:.2f} ms")
    out(f"   offline clicks stored on the server: {n} of {len(report['clicked'])} (each exactly once); "
        f"second flush sent {report['flush_again'].sent}")
    out(f"   whole demo: {time.perf_counter() - total:.0f} s")
    ok = (report["online"].source == "server" and report["offline_after"].source == "edge"
          and n == len(report["clicked"]))
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pocketrank.demo_app", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=None, help="server home (default: var/demo)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="cap the sequence model's training epochs (default: its own, stopping early)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--serve", action="store_true",
                      help="skip the story: start the server and the phone-shaped device app (set up the home "
                           "first if it has no bundle) and run until Ctrl-C")
    mode.add_argument("--no-serve", action="store_true",
                      help="after the story, exit even when run from a terminal")
    parser.add_argument("--port", type=int, default=None, help="device app port (default 8765, else any free one)")
    args = parser.parse_args(argv)
    from .stack import DEFAULT_PORT, serve

    port = DEFAULT_PORT if args.port is None else args.port
    if args.serve:
        return serve(prepare(args.home, args.epochs, only_if_missing=True), port=port)
    code = run(args.home, args.epochs)
    # From a terminal, the story hands over to the clickable app; CI (no TTY) is done here.
    if code == 0 and not args.no_serve and sys.stdin.isatty():
        return serve(prepare(args.home, args.epochs, only_if_missing=True), port=port)
    print("\n   the clickable phone app: .venv/bin/python -m pocketrank.demo_app --serve   (or: make demo-app)")
    return code
