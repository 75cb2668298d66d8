"""`bench scale` section `ray`: `publish` in one process against Ray with 1 and 2 workers, on one home.

    python -m bench scale -- --only ray                                   # 1 M users x 200,000 products
    python -m bench scale -- --only ray --ray-users 100000 --ray-items 50000
    python -m bench scale -- --only ray --ray-runs 1,2                    # Ray with 1 and 2 workers only

The home: a synthetic catalogue of M products (lab/catalogue_vectors.py: vectors shaped like a trained
item table) and N users whose states are the decayed mean of a 50-item history (their last 20 items
consumed, so excluded from their lists), scored by the MovieLens-trained fold model's ranker (the
bench's cached trained home, bench/_trained_home.py; the ranker reads any 64-dim vectors). Above
POCKETRANK_ANN_MIN_ITEMS products the candidates come from the ANN index, built once before the runs.

Each run publishes version 1 of its own copy of the home with the same `now`; the output (the bundle
directory's files, and every user's record row and signature from the store) is hashed, and the hashes
must agree. Ray's start (ray.init with 1 or 2 CPUs) is timed apart from the publish. The first run is the
baseline of the ratios and of the projection to 10 M users x 1 M products (arithmetic from its
measured costs, printed with its formula); `--ray-runs` picks the runs ("one": one process; a number:
Ray with that many workers), so that at full size, where a run takes most of an hour on 2 cores, the
one-process run can be left to the smaller size's table.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

NOW = 1_790_000_000.0
HISTORY, CONSUMED = 50, 20
TARGET_USERS, TARGET_ITEMS = 10_000_000, 1_000_000
DEFAULT_USERS, DEFAULT_ITEMS = 1_000_000, 200_000  # the size: `--ray-users`, `--ray-items` by default
# Retrieval per query at 1,000,000 products through the shipped index (efSearch 3,200), p50 in ms: the ann
# section of docs/scaling.md (`bench scale -- --only ann`, December 2026 run). Building a 1 M-product home
# here would take the index's 500 s build alone; the projection swaps this in for this run's retrieval.
ANN_1M_P50_MS = 9.7


def log(msg: str) -> None:
    print(msg, flush=True)


def build_home(root: Path, n_users: int, n_items: int) -> None:
    """A home with n_items synthetic products, n_users users and the cached trained model (see the module)."""
    from bench._trained_home import trained_home
    from lab.catalogue_vectors import synthetic_catalogue
    from pocketrank.server.bundle.candidates import RecordJob, make_ranker
    from pocketrank.server.bundle.model_artifacts import load_signer
    from pocketrank.server.config import Config
    from pocketrank.server.home import Home
    from pocketrank.server.online.catalogue import load_catalogue
    from pocketrank.server.stores.base import UserRecord
    from pocketrank.shared.features import UserState
    from pocketrank.shared.schemas import Item

    with tempfile.TemporaryDirectory() as tmp:
        trained = Home(trained_home(Path(tmp) / "trained"))
        model = trained.current_model()
        shutil.copytree(trained.model_dir(model), root / "models" / model)
    home = Home(root, Config(home=root, sqlite_synchronous="normal"))
    store = home.store()
    data = synthetic_catalogue(n_items, n_users=n_users, seed=0)
    for lo in range(0, n_items, 50_000):
        ids = range(lo + 1, min(n_items, lo + 50_000) + 1)
        store.put_items([Item(i, f"Product {i}", f"Category {data.category[i - 1]}", price=float(1 + i % 200),
                              sku=f"P{i}") for i in ids], {i: data.items[i - 1] for i in ids})
    weight = float((0.9 ** np.arange(HISTORY)).sum())
    records = {f"u{u:08d}": UserRecord(UserState((data.users[u] * weight).astype(np.float32), weight, HISTORY))
               for u in range(n_users)}
    consumed = {f"u{u:08d}": set((data.history[u, -CONSUMED:] + 1).tolist()) for u in range(n_users)}
    store.reset_derived(records, consumed, {i: 1 + (i * 7919) % 1000 for i in range(1, n_items + 1)}, 0)
    store.set_meta("current_model", model)
    config = home.config or Config(home=root)
    # The ANN index (when the catalogue is large enough for one) is built here, once, and saved under the model.
    make_ranker(load_catalogue(store), RecordJob(root, config, model, 1, 200, "build"))
    load_signer(home)  # one key for every copy: signatures are compared across the runs
    store.close()


def retrieval_ms(root: Path, sample: int = 500) -> float:
    """Mean retrieval time per user (candidates only, as publish asks for them) over a sample of the users."""
    from pocketrank.server.bundle.candidates import RecordJob, make_ranker
    from pocketrank.server.config import Config
    from pocketrank.server.home import Home
    from pocketrank.server.online.catalogue import load_catalogue
    from pocketrank.shared.features import user_vector

    home = Home(root, Config(home=root))
    store = home.store()
    ranker = make_ranker(load_catalogue(store), RecordJob(root, home.config or Config(home=root),
                                                          home.current_model(store), 1, 200, "time"))
    every = store.user_ids()
    users = every[::max(1, len(every) // sample)][:sample]
    asks = [(user_vector(store.user_state(u, 64)), store.consumed_items(u)) for u in users]
    store.close()
    t = time.perf_counter()
    for uv, consumed in asks:
        ranker.retrieve(uv, consumed)
    return (time.perf_counter() - t) / len(asks) * 1e3


def output_hash(root: Path) -> str:
    """sha256 over version 1's bundle files and every user's record row and signature."""
    from pocketrank.server.home import Home

    h = hashlib.sha256()
    bundle = root / "bundles" / "1"
    for p in sorted(bundle.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(bundle)).encode() + b"\0" + p.read_bytes())
    store = Home(root).store()
    users = store.user_ids()
    for lo in range(0, len(users), 50_000):
        chunk = users[lo:lo + 50_000]
        rows, sigs = store.records_at(1, chunk), store.record_sigs(1, chunk)
        for u in chunk:
            r = rows[u]
            h.update(u.encode() + r.blob + r.sha256 + r.sig + sigs[u])
    store.close()
    return h.hexdigest()


def run(base: Path, work: Path, workers: int | None) -> dict:
    """Publish a fresh copy of the home: one process (workers None) or Ray with this many worker CPUs."""
    from lab.homes import copy_home
    from pocketrank.server.bundle.publish import publish_job
    from pocketrank.server.config import Config
    from pocketrank.server.home import Home

    shutil.rmtree(work, ignore_errors=True)
    copy_home(base, work)
    out: dict = {"workers": workers, "init_s": 0.0}
    if workers is not None:
        import ray

        t = time.perf_counter()
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        out["init_s"] = time.perf_counter() - t
    try:
        home = Home(work, Config(home=work, sqlite_synchronous="normal", ray_address="local" if workers else ""))
        t = time.perf_counter()
        result = publish_job(home, progress=True, now=NOW)  # a bar on stderr: a full-size run takes most of an hour
        out["publish_s"] = time.perf_counter() - t
    finally:
        if workers is not None:
            ray.shutdown()
    out["steps"] = result["seconds"]
    out["users"] = result["users"]
    out["hash"] = output_hash(work)
    return out


def ray_section(args) -> str:
    n_users, n_items = args.ray_users, args.ray_items
    with tempfile.TemporaryDirectory(dir=args.ray_tmp) as tmp:
        base = Path(tmp) / "base"
        t = time.perf_counter()
        build_home(base, n_users, n_items)
        log(f"home: {n_users:,} users x {n_items:,} products built in {time.perf_counter() - t:.0f} s "
            f"(store {(base / 'store.sqlite').stat().st_size / 2**20:.0f} MiB)")
        retrieval = retrieval_ms(base)
        log(f"retrieval: {retrieval:.2f} ms per user (mean of 500)")
        runs = []
        for workers in parse_runs(args.ray_runs):
            r = run(base, Path(tmp) / "run", workers)
            runs.append(r)
            log(f"  {label(r)}: publish {r['publish_s']:.1f} s (steps {r['steps']}), Ray start {r['init_s']:.1f} s, "
                f"output {r['hash'][:16]}")
    return report(runs, n_users, n_items, retrieval)


def parse_runs(text: str) -> list[int | None]:
    """"one,1,2" -> [None, 1, 2]: None is the one process, a number Ray's worker CPUs. The first run is the
    baseline whose costs are taken as one core's (the ratios, the projection): "one" or 1."""
    try:
        runs = [None if part.strip() == "one" else int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        runs = []
    if not runs or any(w is not None and w < 1 for w in runs):
        raise SystemExit(f"--ray-runs: a comma-separated list of 'one' and worker counts, not {text!r}")
    if runs[0] not in (None, 1):
        raise SystemExit("--ray-runs: the first run is the one-core baseline: 'one' or 1")
    return runs


def section_name(args) -> str:
    """The full size (the defaults) writes section scale-ray; any other size its own, so both tables stay."""
    default = (args.ray_users, args.ray_items) == (DEFAULT_USERS, DEFAULT_ITEMS)
    return "scale-ray" if default else f"scale-ray-{args.ray_users}x{args.ray_items}"


def label(r: dict) -> str:
    return "one process (default)" if r["workers"] is None else f"Ray, {r['workers']} worker{'s' * (r['workers'] > 1)}"


def report(runs: list[dict], n_users: int, n_items: int, retrieval: float) -> str:
    from pocketrank.server.config import Config

    base = runs[0]
    same = all(r["hash"] == base["hash"] for r in runs)
    lines = []
    for r in runs:
        s = r["steps"]
        lines.append(f"| {label(r)} | {r['publish_s']:.1f} s | {base['publish_s'] / r['publish_s']:.2f}x | "
                     f"{s['records']:.1f} s ({base['steps']['records'] / s['records']:.2f}x) | "
                     f"{s['write']:.1f} s | {s['items']:.1f} s | {r['init_s']:.1f} s | "
                     f"`{r['hash'][:12]}` {'same' if r['hash'] == base['hash'] else 'DIFFERENT'} |")
    # The projection: the records and item-entry steps divide over the cluster's cores (at the parallel
    # efficiency measured here with 2 workers against the baseline's 1 core); writing the records stays
    # in the driver.
    measured_per_user = base["steps"]["records"] / n_users
    per_user = measured_per_user - retrieval / 1e3 + ANN_1M_P50_MS / 1e3  # retrieval as at 1 M products
    write_per_user = base["steps"]["write"] / n_users
    per_item = base["steps"]["items"] / n_items
    two = next((r["steps"] for r in runs if r["workers"] == 2), None)
    efficiency = 1.0 if two is None else (
        (base["steps"]["records"] + base["steps"]["items"]) / (two["records"] + two["items"]) / 2)
    cores = 16
    serial = TARGET_USERS * write_per_user
    projection = []
    for machines in (1, 4, 16, 64):
        parallel = (TARGET_USERS * per_user + TARGET_ITEMS * per_item) / (machines * cores * efficiency)
        projection.append(f"| {machines} | {machines * cores} | {parallel / 60:.1f} min | {serial / 60:.1f} min | "
                          f"{(parallel + serial) / 60:.1f} min |")
    runs_arg = ",".join("one" if r["workers"] is None else str(r["workers"]) for r in runs)
    ann = "the ANN index" if 0 < Config().ann_min_items <= n_items else "the exact scan"
    load = os.getloadavg()
    return f"""### Measured: publish on Ray (`python -m bench scale -- --only ray --ray-users {n_users} --ray-items {n_items} --ray-runs {runs_arg}`)

{n_users:,} users x {n_items:,} products (retrieval: {ann}), 200 candidates each, version 1 of a fresh
copy of the same home per run, same `now`. One machine with {os.cpu_count()} cores shared with other work
(load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} when the run ended). Ray partitions two
steps: "records" (each user's candidates, scores, record and signature; partitions of the users) and
"items" (the signed item entries; partitions of the catalogue); "write" (the records into the store)
runs in the driver either way. The output hash covers
the bundle directory's files and every user's record row and signature: byte-identical across the
runs: **{'yes' if same else 'NO'}**. Ratios are to the first run ({label(base)}).

| run | publish | speed-up | records step (speed-up) | write | items | Ray start | output (sha256) |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |
{chr(10).join(lines)}

Projection to {TARGET_USERS:,} users x {TARGET_ITEMS:,} products on N machines of {cores} cores, from
the first run's measured costs ({label(base)}): records {measured_per_user * 1e3:.3f} ms per user here, of which
retrieval {retrieval:.2f} ms (mean of 500 users), taken as {per_user * 1e3:.3f} ms with retrieval at 1 M
products instead ({ANN_1M_P50_MS} ms p50 per query through the index, the ann section above); item entries
{per_item * 1e6:.1f} us per product, write {write_per_user * 1e6:.1f} us per user, and the parallel
efficiency of the two partitioned steps at 2 workers here ({efficiency:.2f}{'' if two else ', not measured: taken as 1'}):

    T(N) = (users x {per_user * 1e3:.3f} ms + products x {per_item * 1e6:.1f} us) / (N x {cores} x {efficiency:.2f})  +  users x {write_per_user * 1e6:.1f} us

| machines | cores | records + item entries (tasks) | write (driver) | total |
| ---: | ---: | ---: | ---: | ---: |
{chr(10).join(projection)}

The rest of a user's cost (reading the state and history, scoring 200 candidates, packing, signing,
compressing) does not depend on the catalogue's size. Ray's start, the catalogue's load and
the ANN index's build are left out (minutes at most, once per publish). The driver's write does not
shrink with machines: past some machines it dominates, and the next step would be to write the
records from the tasks (a store that takes concurrent writers: Redis).
"""
