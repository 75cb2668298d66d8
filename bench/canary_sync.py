"""`python -m bench canary_sync`: what canary variants of a bundle cost (docs/sync-protocol.md §16).

On MovieLens-100k: a 2-epoch model trained, exported and published into a scratch home (or a copy of
`--home PATH`, e.g. var/demo, to skip training), and a derived canary (lab/served_models.py:
the same model with its item vectors shuffled).

1. CPU per sync answer, in one process through the Flask test client (no HTTP), each (user, cursor)
   answer cached as devices of one publish make it: cursor 0 and a 304, with no rollout; with a 50%
   rollout for users outside it (the live bundle) and inside it (the variant: its states are the
   user's recent events folded with the canary's vectors on every answer, the extra cost).
2. `canary start`, the variant build included (item entries signed over the canary, its artifacts,
   the manifest).
3. Bytes of the answer that switches a device from the live model to the canary at the same bundle
   version (records `same`, every item entry of its list and of popular again, states), against the
   304 it would get otherwise; the artifact bytes come on top (a ranker and an encoder).

    python -m bench canary_sync                    # trains a scratch home (~1 min)
    python -m bench canary_sync -- --home var/demo # a copy of an existing home (with a published bundle)
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from lab.homes import copy_home

SHARE = 0.5


def _home(tmp: Path, src: str | None) -> Path:
    """A copy of `src`, else a scratch home trained and published as bench/sync.py makes one."""
    if src:
        dst = tmp / "home"
        copy_home(src, dst, ignore=shutil.ignore_patterns("*.log", "devices.sqlite*"))
        return dst
    from bench.sync import _home as trained_home

    return trained_home(tmp)


def _cpu_us(api, users: list[str], query: str, n: int, headers=None) -> tuple[float, int]:
    for u in users[:50]:
        api.get(f"/v1/sync?users={u}&{query}", headers=headers)  # every (user, cursor) answer cached first
    t = time.process_time()
    for i in range(n):
        status = api.get(f"/v1/sync?users={users[i % 50]}&{query}", headers=headers).status_code
    return (time.process_time() - t) / n * 1e6, status


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench canary_sync")
    p.add_argument("--home", help="copy this home (with a published bundle) instead of training one")
    p.add_argument("--requests", type=int, default=2000, help="answers timed per row")
    args = p.parse_args(argv)
    from lab.served_models import derive_version
    from pocketrank.server.api.app import create_app
    from pocketrank.server.config import Config
    from pocketrank.server.jobs import rollout
    from pocketrank.server.release import canary
    from pocketrank.server.release.registry import Registry

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        root = _home(Path(tmp), args.home)
        print(f"scratch home ready in {time.perf_counter() - t:.0f} s")
        app = create_app(Config(home=root, sync_rate=0, address_rate=0))
        api, store = app.test_client(), app.extensions["pocketrank"].store
        version = int(store.get_meta("bundle_version"))
        users = [str(u) for u in range(1, 944)]
        cur, inm = f"cursor={version}", {"If-None-Match": f'"v{version}"'}

        def row(label: str, us: list[str], model: str = "") -> None:
            a, s0 = _cpu_us(api, us, "cursor=0" + model, args.requests)
            b, s1 = _cpu_us(api, us, cur + model, args.requests, inm)
            print(f"  {label:42s} cursor 0 {a:5.0f} us ({s0})   304 {b:5.0f} us ({s1})")

        print(f"\nCPU per sync answer, one process, no HTTP, {args.requests} answers a cell:")
        row("no rollout", users)
        derive_version(root, store, "m-canary", shuffle_seed=1)
        Registry(root).register("m-canary")
        t = time.perf_counter()
        ro = rollout.start(root, store, "m-canary", SHARE)
        built = time.perf_counter() - t
        inside = [u for u in users if canary.in_canary(u, ro["rollout_id"], SHARE)]
        outside = [u for u in users if not canary.in_canary(u, ro["rollout_id"], SHARE)]
        row(f"rollout at {SHARE:.0%}, users outside (live)", outside)
        row(f"rollout at {SHARE:.0%}, users inside (variant)", inside, "&model=m-canary")
        print(f"\ncanary start, the variant build included: {built * 1e3:.0f} ms "
              f"({ro['device_variant'].get('items')} item entries, bundle {version})")
        u = inside[0]
        switch = api.get(f"/v1/sync?users={u}&{cur}")  # the device holds the live model: it switches
        body = switch.get_json()
        art = sum(len(api.get(url).data) for url in body["artifacts"].values())
        print(f"\nswitching one user's device to the canary at bundle {version}: answer {len(switch.data):,} B "
              f"({len(body['items'])} item entries, record '{body['records'][u]['kind']}'), artifacts {art:,} B; "
              f"the device holding it: {api.get(f'/v1/sync?users={u}&{cur}&model=m-canary').status_code}, 0 B")
        store.close()
    return 0
