"""`python -m bench canary`: what routing by the registry and shadow mode cost a request, and the
acceptance scenario's looks.

On MovieLens-100k (a 2-epoch model trained into a scratch home, so nothing of yours changes).

1. Latency of Serving.recommend (in process, k=10, every one of the 943 users twice, one thread):
   one model with no registry; a 5% and a 50% canary of an identical copy (the canary arm refolds
   the user's recent events with its own vectors); a 10% and a 100% shadow on top (the shadow ranks
   on a background thread, so what it costs the answer is GIL contention; the p99 shows it).
2. Issue 8's scenario (tests/server/release/test_canary_serving.py): a shuffled-vector copy and an
   identical copy each started at 5%; every user asks for 10 items and clicks each with its
   item-item affinity to what they rated; the canary job looks after every round (at most 3).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def _home(tmp: Path) -> Path:
    from pocketrank.server.data.datasets import import_movielens
    from pocketrank.server.home import Home
    from pocketrank.server.jobs.train import export_job, train_job

    home = Home(tmp / "home")
    import_movielens(home.store(), "100k", progress=False)
    train_job(home, epochs=2, kind="fold", progress=False)
    export_job(home, n_users=100)
    return home.root


def _copy(src: Path, dst: Path):
    from lab.homes import copy_home
    from pocketrank.server.config import Config
    from pocketrank.server.stores import open_store

    shutil.rmtree(dst, ignore_errors=True)
    copy_home(src, dst)
    return open_store(Config(home=dst))


def latency(src: Path, work: Path) -> None:
    from lab.served_models import derive_version  # the same derived versions as the tests
    from pocketrank.server.api.app import create_app
    from pocketrank.server.config import Config
    from pocketrank.server.jobs import rollout
    from pocketrank.server.release.registry import Registry

    root = work / "latency"
    store = _copy(src, root)
    reg = Registry(root)
    for name in ("m-copy", "m-shadow"):
        derive_version(root, store, name)
        reg.register(name)
    serving = create_app(Config(home=root)).extensions["pocketrank"]
    users = [str(u) for u in range(1, 944)]

    def run(label: str) -> None:
        for u in users[:50]:
            serving.recommend(u, 10)
        ts = []
        for _ in range(2):
            for u in users:
                t = time.perf_counter()
                serving.recommend(u, 10)
                ts.append(time.perf_counter() - t)
        serving.shadow.flush(60)
        ms = np.array(ts) * 1e3
        print(f"  {label:34s} p50 {np.percentile(ms, 50):6.3f} ms   p99 {np.percentile(ms, 99):6.3f} ms")

    print("Serving.recommend, k=10, 1,886 requests each:")
    run("one model, no registry")
    rollout.start(root, store, "m-copy", 0.05)
    run("canary at 5%")
    reg.record_decision({"action": "widen"}, share=0.5)
    run("canary at 50%")
    rollout.start_shadow(root, store, "m-shadow", 0.1)
    run("canary at 50% + shadow on 10%")
    rollout.start_shadow(root, store, "m-shadow", 1.0)
    run("canary at 50% + shadow on 100%")
    f = serving.shadow.log.figures()
    print(f"  shadow on 100%: compared {f['compared']}, dropped at a full queue {f['dropped']}")
    store.close()


def scenario(src: Path, work: Path) -> None:
    from lab.served_models import Tastes, derive_version, simulate_round
    from pocketrank.server.api.app import create_app
    from pocketrank.server.config import Config
    from pocketrank.server.jobs import rollout
    from pocketrank.server.release.registry import Registry

    print("\nCanary at 5%, 943 MovieLens users a round, a look after each:")
    for version, seed in (("m-broken", 1), ("m-good", None)):
        root = work / version
        store = _copy(src, root)
        derive_version(root, store, version, shuffle_seed=seed)
        Registry(root).register(version)
        api = create_app(Config(home=root)).test_client()
        tastes = Tastes(store)
        rollout.start(root, store, version, 0.05)
        rng = np.random.default_rng(0)
        for r in range(3):
            simulate_round(api, tastes.users, tastes, rng, f"{version}-{r}")
            res = rollout.check(root, store)
            d = res["decision"]
            print(f"  {version:8s} look {r + 1}: {res['action']:8s} CTR canary {d['ctr_canary']:.4f} vs "
                  f"{d['ctr_control']:.4f} (z {d['z_ctr']:+.2f}), bounce {d['bounce_canary']:.3f} vs "
                  f"{d['bounce_control']:.3f} (z {d['z_bounce']:+.2f}), z_crit {d['z_crit']:.2f}, "
                  f"users {d['users_canary']}/{d['users_control']}")
            if res["action"] not in ("continue", "wait"):
                break
        store.close()


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        src = _home(Path(tmp))
        print(f"scratch home trained and exported in {time.perf_counter() - t:.0f} s")
        latency(src, Path(tmp))
        scenario(src, Path(tmp))
    return 0
