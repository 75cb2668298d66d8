"""The /metrics scrape's cost against the event log's size: 10 k, 100 k and 1 M events, before and after.

    python -m bench metrics                 # 10k, 100k, 1M events; 50 scrapes each
    python -m bench metrics -- --sizes 10000,100000 --scrapes 20

A SYNTHETIC log in a scratch SQLite home (sessions of impressions, views, clicks, carts and
purchases over 30 days ending now, with source/platform context; 200 items), scraped through
Flask's test client with the operator's default window (a day, hourly buckets). Before each
scrape 20 new events are logged (store.append_events, not timed) and the summary cache is off,
so every scrape folds new events and recomputes its figures: the worst case of a busy server.
No updater runs (the imported history is marked folded): the fold is not what is measured.

Three ways, side by side in one run:

- `recompute 50k`: what issue 18 describes (the code before the running metrics): read the newest
  50,000 events, sessionize them and run collector.summarize + collector.timeseries, per scrape.
  Timed as that function alone (the endpoint that called it is gone), so it leaves out the rest
  of the scrape (rendering, registry reads).
- `pass over sessions`: the code before this branch: the endpoint, with RunningMetrics folding new
  events and then summing every held session (up to 50,000) per scrape (`summary_by_pass`).
- `running totals`: the endpoint as it is (window.py: per-window totals, O(segments + buckets)).

Each scrape's wall time and CPU time (time.process_time) are reported: on a shared machine the wall
time includes waiting for a core, the CPU time is what the scrape itself costs.
Also, per size: the first scrape of a fresh app (a new worker), which leaves the read of the whole log
to a background thread and answers without the window's figures; how long until they are complete
(that read); and, for the running totals, a scrape right after a burst of BURST events logged at once
(folded in the background too; the figures stay, a few seconds behind).
Goal (issue 18): a scrape under 50 ms at 1 M events, and independent of the log's size.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import tempfile
import time
from pathlib import Path

import numpy as np

GOAL_MS = 50.0
WINDOW, BUCKET = 86_400.0, 3_600.0
N_ITEMS = 200
BURST = 20_000
TYPES = ("impression",) * 6 + ("view", "view", "click", "click", "add_to_cart", "purchase")
CONTEXTS = ((("platform", "android"), ("source", "server")), (("platform", "ios"), ("source", "edge")),
            (("source", "cache"),), ())


def make_events(n: int, start_id: int, rng: random.Random, now: float, span: float = 30 * 86_400.0):
    """`n` events in sessions of about 10, over `span` seconds ending a minute before `now`."""
    from pocketrank.shared.schemas import Event

    out, i = [], 0
    while i < n:
        user = f"u{rng.randrange(20_000)}"
        session = f"s{start_id + i}"
        t = now - 60 - rng.random() * span
        ctx = rng.choice(CONTEXTS)
        for _ in range(min(n - i, rng.randint(4, 16))):
            out.append(Event(f"e{start_id + i}", user, "d", rng.choice(TYPES), t, rng.randrange(1, N_ITEMS + 1),
                             None, session, ctx))
            t = min(t + rng.uniform(1, 120), now - 1)
            i += 1
    return out


def scratch_home(root: Path):
    from pocketrank.server.config import Config
    from pocketrank.server.stores import open_store
    from pocketrank.shared.schemas import Item

    # No updater in the app: this measures the scrape, not the fold (see mark_folded).
    config = Config(home=root, sqlite_synchronous="normal", updater="external")
    store = open_store(config)
    rng = np.random.default_rng(0)
    items = [Item(i, f"thing {i}", "Books", None, float(5 + i % 50)) for i in range(1, N_ITEMS + 1)]
    store.put_items(items, {i: rng.normal(size=16).astype(np.float32) for i in range(1, N_ITEMS + 1)})
    return config, store


def mark_folded(store) -> None:
    """Move the updater's position to the log's head with no user states (the store's own reset after a
    refold), so the backlog gauge counts only what each scrape's 20 new events add, not the imported history."""
    store.reset_derived({}, {}, {}, store.log_head())


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def recompute_50k(store) -> None:
    """The pre-running-metrics scrape's figures: the newest 50,000 events, sessionized, per scrape."""
    from pocketrank.server.monitoring import collector

    head = store.log_head()
    events = [e.event for e in store.iter_log(max(0, head - 50_000))]  # SQLite positions are dense
    until = max((e.timestamp for e in events), default=0.0)
    events = [e for e in events if e.timestamp >= until - WINDOW]
    prices = {it.item_id: it.price for it in store.items()}
    collector.summarize(events, prices)
    collector.timeseries(events, BUCKET, prices)


def scrape_times(app, store, way: str, scrapes: int, rng: random.Random, next_id: list[int]
                 ) -> tuple[list[float], list[float]]:
    """Wall and CPU milliseconds of each scrape."""
    running = app.extensions["pocketrank.metrics"]
    running.fresh_seconds = 0.0  # every scrape recomputes
    if way == "pass over sessions":
        running.summary = running.summary_by_pass  # the code before the running totals
    client = app.test_client()
    wall, cpu = [], []
    for _ in range(scrapes):
        store.append_events(make_events(20, next_id[0], rng, time.time(), span=600))
        next_id[0] += 20
        t0, c0 = time.perf_counter(), time.process_time()
        if way == "recompute 50k":
            recompute_50k(store)
        else:
            resp = client.get("/metrics")
            assert resp.status_code == 200 and b"pocketrank_ctr" in resp.data
        wall.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
    return wall, cpu


def burst_scrape(app, store, rng: random.Random, next_id: list[int]) -> float:
    """Wall milliseconds of a scrape right after BURST events were logged at once (a client's backlog
    arriving, a replay): the read goes to the background, the scrape answers with figures a little behind."""
    running = app.extensions["pocketrank.metrics"]
    store.append_events(make_events(BURST, next_id[0], rng, time.time(), span=600))
    next_id[0] += BURST
    t0 = time.perf_counter()
    resp = app.test_client().get("/metrics")
    ms = (time.perf_counter() - t0) * 1000
    assert resp.status_code == 200 and b"pocketrank_sessions{" in resp.data  # figures stay, a little behind
    running.wait(3_600)
    return ms


def main(argv: list[str]) -> int:
    from pocketrank.server.api.app import create_app

    p = argparse.ArgumentParser(prog="python -m bench metrics")
    p.add_argument("--sizes", default="10000,100000,1000000")
    p.add_argument("--scrapes", type=int, default=50)
    args = p.parse_args(argv)
    logging.getLogger("pocketrank.access").setLevel(logging.WARNING)  # a line per scrape would drown the table
    sizes = [int(s) for s in args.sizes.split(",")]
    rng = random.Random(18)
    print(f"load before: {os.getloadavg()[0]:.2f} (1-min average; 2 cores shared)")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-metrics-") as tmp:
        config, store = scratch_home(Path(tmp) / "home")
        logged, next_id = 0, [0]
        for size in sizes:
            t0 = time.perf_counter()
            while logged < size:
                batch = make_events(min(100_000, size - logged), next_id[0], rng, time.time())
                next_id[0] += len(batch)
                store.import_events(batch)
                logged += len(batch)
            mark_folded(store)
            print(f"\n{store.log_head():,} events in the log (built in {time.perf_counter() - t0:.0f} s)")
            for way in ("recompute 50k", "pass over sessions", "running totals"):
                app = create_app(config)
                running = app.extensions["pocketrank.metrics"]
                t0 = time.perf_counter()
                first = app.test_client().get("/metrics")
                first_ms = (time.perf_counter() - t0) * 1000
                assert first.status_code == 200
                first_has = b"pocketrank_business_figures_complete 1.0" in first.data
                assert running.wait(3_600) and running.complete  # the new worker's read of the whole log
                complete_s = time.perf_counter() - t0
                wall, cpu = scrape_times(app, store, way, args.scrapes, rng, next_id)
                sessions, size = running.n_sessions, store.log_head()
                burst = burst_scrape(app, store, rng, next_id) if way == "running totals" else None
                row = (size, way, first_ms, complete_s, pct(wall, 50), pct(wall, 99), pct(cpu, 50),
                       pct(cpu, 99), burst)
                rows.append(row)
                print(f"  {way:<20} first scrape {first_ms:6.0f} ms ({'with' if first_has else 'without'} the "
                      f"figures; complete after {complete_s:5.1f} s)   wall p50 {row[4]:7.1f} p99 {row[5]:7.1f}   "
                      f"cpu p50 {row[6]:7.1f} p99 {row[7]:7.1f} ms   ({sessions:,} sessions held, "
                      f"load {os.getloadavg()[0]:.1f})" + (f"   after a burst of {BURST:,}: {burst:.1f} ms"
                                                             if burst is not None else ""), flush=True)
                app.extensions["pocketrank"].store.close()
            logged = store.log_head()
        store.close()
    print(f"\nload after: {os.getloadavg()[0]:.2f}")
    print(f"\nmilliseconds per scrape ({args.scrapes} scrapes; wall time waits for the CPU on a shared machine,"
          " CPU time does not)")
    print(f"{'events':>10}  {'way':<20} {'first':>7} {'complete':>9} {'wall p50':>9} {'wall p99':>9} {'cpu p50':>8} "
          f"{'cpu p99':>8} {'burst':>7}")
    for n, way, first_ms, complete_s, p50, p99, c50, c99, burst in rows:
        print(f"{n:>10,}  {way:<20} {first_ms:>7.0f} {complete_s:>8.1f}s {p50:>9.1f} {p99:>9.1f} {c50:>8.1f} "
              f"{c99:>8.1f} {'-' if burst is None else f'{burst:.1f}':>7}")
    final = [r for r in rows if r[1] == "running totals"]
    worst = max(max(r[2], r[5], r[8]) for r in final)  # first scrape, wall p99, after a burst
    verdict = "met" if worst < GOAL_MS else "NOT met (wall)" if final[-1][7] < GOAL_MS else "NOT met"
    print(f"\nrunning totals at {final[-1][0]:,} events: first scrape {final[-1][2]:.1f} ms, wall p99 "
          f"{final[-1][5]:.1f} ms, cpu p99 {final[-1][7]:.1f} ms, after a burst of {BURST:,} {final[-1][8]:.1f} ms "
          f"(goal < {GOAL_MS:.0f} ms at every size, whatever the scrape: {verdict}); cpu p50 from "
          f"{min(r[6] for r in final):.1f} to {max(r[6] for r in final):.1f} ms across sizes")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
