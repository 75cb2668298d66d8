"""What the request contract (pydantic models, issue 18) costs against the hand-written validation it
replaced, side by side in one run.

    python -m bench contract                    # against HAND_WRITTEN, the last commit before the contract
    python -m bench contract -- --ref 4e62852   # against any commit
    python -m bench contract -- --quick         # shorter runs

1. The validation step alone, one process, the same inputs both ways: the commit's shared/schemas.py
   (loaded from git) and this tree's: per event (a click with context), per product, per batch of 500
   events.
2. Both servers at once on loopback, each from its own tree (`git archive` of the commit, this tree),
   on copies of one MovieLens-100k home (2 epochs), gunicorn with the production config: GET
   /v1/recommendations at 200 req/s and POST /v1/events (100 events each) at 20 req/s, open loop, p50
   and p99; the two trees take turns, twice, so a change in the machine's load hits both.
The load generator shares the machine's cores with the servers: the load average is printed with the
figures, and only the ratio between the two columns of one run means anything on a busy machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import timeit
from io import BytesIO
from pathlib import Path
from types import ModuleType

from bench._loadgen import Client, open_loop, pct

REPO = Path(__file__).resolve().parents[1]
HAND_WRITTEN = "4e62852"  # the last commit whose shared/schemas.py validated by hand


def log(msg: str) -> None:
    print(msg, flush=True)


def hand_written_schemas(ref: str) -> ModuleType:
    """The commit's shared/schemas.py as a module of the package `shared` (its `.errors` is this tree's)."""
    source = subprocess.run(["git", "-C", str(REPO), "show", f"{ref}:shared/schemas.py"], check=True,
                            capture_output=True, text=True).stdout
    spec = importlib.util.spec_from_loader("shared._hand_written_schemas", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "shared"
    sys.modules[spec.name] = module
    exec(compile(source, f"{ref}:shared/schemas.py", "exec"), module.__dict__)
    return module


EVENT = {"event_id": "e-000001", "user_id": "u-42", "device_id": "phone-7", "type": "click", "item_id": "SKU-1234",
         "timestamp": 1_700_000_000.25, "session_id": "s-9", "context": {"source": "edge", "platform": "android"}}
PRODUCT = {"item_id": "SKU-1234", "title": "Folding chair", "category": "Garden > Furniture", "price": 39.9,
           "currency": "EUR", "stock": 12, "attributes": {"colour": "green", "weight_kg": 4.5}}


def validation_alone(ref: str, quick: bool) -> list[tuple[str, float, float]]:
    from pocketrank.shared import schemas as contract

    old = hand_written_schemas(ref)
    batch = [{**EVENT, "event_id": f"e-{i}"} for i in range(500)]
    assert old.validate_event(EVENT).to_dict() == contract.validate_event(EVENT, wire=True).to_dict()  # alike
    assert old.validate_item(PRODUCT).to_dict() == contract.validate_item(PRODUCT, wire=True).to_dict()
    cases = [
        ("one event, us", lambda v: v.validate_event(EVENT), 1e6, 20_000),
        ("one product, us", lambda v: v.validate_item(PRODUCT), 1e6, 10_000),
        ("a batch of 500 events, ms", lambda v: [v.validate_event(e) for e in batch], 1e3, 40),
    ]
    rows = []
    for label, call, unit, number in cases:
        number = max(1, number // (5 if quick else 1))
        times = {}
        for name, module in (("hand", old), ("contract", contract)):
            if module is contract:  # what the endpoints call: the JSON contract exactly
                def run(f=call, m=module):
                    return f(_Wire(m))
            else:
                def run(f=call, m=module):
                    return f(m)
            times[name] = min(timeit.repeat(run, number=number, repeat=5)) / number * unit
        rows.append((label, times["hand"], times["contract"]))
    return rows


class _Wire:
    """The contract module with wire=True, as POST /v1/events and /v1/items call it."""

    def __init__(self, module: ModuleType):
        self.module = module

    def validate_event(self, obj):
        return self.module.validate_event(obj, wire=True)

    def validate_item(self, obj):
        return self.module.validate_item(obj, wire=True)


def tree_of(ref: str, into: Path) -> Path:
    """The commit's files (no .git), unpacked into `into`."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref], check=True, capture_output=True).stdout
    into.mkdir(parents=True)
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


class Gunicorn:
    """The production entry point (gunicorn, pocketrank.server.gunicorn_conf) from the tree at `root`."""

    def __init__(self, root: Path, home: Path, port: int):
        self.port = port
        env = {**os.environ, "PYTHONPATH": str(root), "POCKETRANK_HOME": str(home), "POCKETRANK_BIND":
               f"127.0.0.1:{port}", "POCKETRANK_WORKERS": "1", "POCKETRANK_ADDRESS_RATE": "0",
               "POCKETRANK_REQUEST_RATE": "0", "POCKETRANK_MAX_CLOCK_SKEW": "86400"}
        self.proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "python:pocketrank.server.gunicorn_conf",
                                      "pocketrank.server.wsgi:app"], env=env, cwd=root,
                                     stdout=open(home / "gunicorn.log", "ab"), stderr=subprocess.STDOUT)
        client = Client("127.0.0.1", port)
        deadline = time.monotonic() + 120
        while True:
            try:
                if client.request("GET", "/v1/recommendations?user_id=196&k=20")[0] == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"server from {root} did not start; see {home}/gunicorn.log")
            time.sleep(0.2)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _events_call(client: Client, tag: str):
    def call(i: int) -> None:
        now = time.time()
        evs = [{**EVENT, "event_id": f"{tag}-{i}-{j}", "user_id": str(1 + (i * 31 + j) % 943),
                "item_id": str(1 + (i * 7 + j * 13) % 1682), "timestamp": now} for j in range(100)]
        client.post_json("/v1/events", json.dumps({"events": evs}).encode())
    return call


def _recs_call(client: Client):
    def call(i: int) -> None:
        status, _ = client.request("GET", f"/v1/recommendations?user_id={1 + (i * 7919) % 943}&k=20")
        if status != 200:
            raise RuntimeError(status)
    return call


def servers_side_by_side(ref: str, quick: bool, tmp: Path) -> dict[str, dict[str, list]]:
    from lab.homes import copy_home, movielens_home
    from pocketrank.demo_app.localserver import free_port

    t0 = time.perf_counter()
    home = movielens_home(tmp / "home", epochs=2).root
    log(f"  MovieLens-100k home trained and published in {time.perf_counter() - t0:.0f} s")
    trees = {"hand": tree_of(ref, tmp / "hand-tree"), "contract": REPO}
    homes = {name: copy_home(home, tmp / f"home-{name}") for name in trees}
    secs = 3 if quick else 8
    lat: dict[str, dict[str, list]] = {name: {"recs": [], "events": [], "errors": []} for name in trees}
    for round_ in range(2):
        for name, root in trees.items():
            server = Gunicorn(root, homes[name], free_port())
            try:
                client = Client("127.0.0.1", server.port)
                open_loop(50, 1, _recs_call(client))  # warm: sessions, caches, connections
                recs = open_loop(200, secs, _recs_call(client))
                events = open_loop(20, secs, _events_call(client, f"{name}{round_}"), threads=16)
                lat[name]["recs"] += recs.latencies_ms
                lat[name]["events"] += events.latencies_ms
                lat[name]["errors"].append(recs.errors + events.errors)
                log(f"  round {round_ + 1}, {name:8s}: recommendations at 200 req/s p50 "
                    f"{pct(recs.latencies_ms, 50):.2f} p99 {pct(recs.latencies_ms, 99):.2f} ms; events x100 at "
                    f"20 req/s p50 {pct(events.latencies_ms, 50):.2f} p99 {pct(events.latencies_ms, 99):.2f} ms; "
                    f"errors {recs.errors + events.errors} (load {os.getloadavg()[0]:.1f})")
            finally:
                server.stop()
    return lat


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench contract", description=__doc__.splitlines()[0])
    parser.add_argument("--ref", default=HAND_WRITTEN, help="the commit to compare with (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    parser.add_argument("--no-servers", action="store_true", help="only the validation step")
    args = parser.parse_args(argv)
    load_at_start = os.getloadavg()[0]
    log(f"== 1. the validation step alone ({args.ref}'s hand-written shared/schemas.py, this tree's contract)")
    rows = validation_alone(args.ref, args.quick)
    log(f"  {'':30s}{'hand-written':>14s}{'contract':>12s}{'ratio':>8s}")
    for label, hand, contract in rows:
        log(f"  {label:30s}{hand:>14.2f}{contract:>12.2f}{contract / hand:>8.2f}")
    if not args.no_servers:
        log("\n== 2. both servers, the same home, taking turns")
        with tempfile.TemporaryDirectory(prefix="bench-contract-") as tmp:
            lat = servers_side_by_side(args.ref, args.quick, Path(tmp))
        log(f"\n  {'(both rounds pooled)':44s}{'hand-written':>14s}{'contract':>12s}")
        for label, key, q in (("recommendations at 200 req/s, p50 ms", "recs", 50),
                              ("recommendations at 200 req/s, p99 ms", "recs", 99),
                              ("events (100 per POST) at 20 req/s, p50 ms", "events", 50),
                              ("events (100 per POST) at 20 req/s, p99 ms", "events", 99)):
            log(f"  {label:44s}{pct(lat['hand'][key], q):>14.2f}{pct(lat['contract'][key], q):>12.2f}")
        log(f"  {'errors':44s}{sum(lat['hand']['errors']):>14d}{sum(lat['contract']['errors']):>12d}")
    log(f"\nload average {load_at_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end (2 cores, shared)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
