"""`python -m bench rebase`: how long re-basing the store on a promoted model takes (server/jobs/rebase.py).

On MovieLens-100k (943 users, 100,000 events): a 2-epoch model trained into a scratch home, and a
copy of it with perturbed item vectors registered live, as a promotion leaves it. The re-base is
run `REPEATS` times (forced, so each run refolds everything) on the home's SQLite store, with the
MovieLens profiles for segment vectors; the figures are the fold (reading the log and folding every
user with the new vectors, while nothing is locked), the swap (the tail, items, user states,
segments and current_model in one transaction, under the updater's lock: what ingestion waits for)
and the total.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
from pathlib import Path

import numpy as np

REPEATS = 3


def main(argv: list[str]) -> int:
    from pocketrank.server.config import Config
    from pocketrank.server.data.datasets import import_movielens
    from pocketrank.server.home import Home
    from pocketrank.server.jobs.rebase import rebase
    from pocketrank.server.jobs.train import export_job, train_job
    from pocketrank.server.online.versions import save_vectors
    from pocketrank.server.release.registry import Registry
    from pocketrank.server.stores import open_store

    tmp = Path(tempfile.mkdtemp(prefix="bench-rebase-"))
    try:
        home = Home(tmp / "home")
        import_movielens(home.store(), "100k", progress=False)
        train_job(home, epochs=2, kind="fold", progress=False)
        export_job(home, n_users=100)
        store = open_store(Config(home=home.root))
        current = store.get_meta("current_model")
        ids, vecs = store.item_vectors()
        vecs = vecs + 0.3 * vecs.std() * np.random.default_rng(0).normal(size=vecs.shape).astype(np.float32)
        shutil.copytree(home.model_dir(current), home.model_dir("m-next"))
        save_vectors(home.model_dir("m-next"), ids, vecs)
        reg = Registry(home.root)
        reg.register(current, state="live")
        reg.register("m-next", state="live")  # retires the old one: what a promotion leaves
        profiles = store.profiles()  # MovieLens' user attributes, imported with it
        runs = [rebase(home, store, "m-next", profiles, force=True, progress=False) for _ in range(REPEATS)]
        store.close()
        first = runs[0]
        print(f"MovieLens-100k: {first['users']} users, {first['events']:,} events, {first['items']} items, "
              f"{first['segments']} segments; SQLite store; {REPEATS} forced runs")
        print(f"{'phase':<8} {'median s':>9} {'min s':>7}")
        for phase in ("fold", "swap", "total"):
            xs = [r["seconds"][phase] for r in runs]
            print(f"{phase:<8} {statistics.median(xs):>9.3f} {min(xs):>7.3f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0
