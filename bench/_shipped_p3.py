"""Protocol 3 (freshness) on the shipped path: what the real-time updater is worth to the server's answers.

The log is split at the 80% quantile of its timestamps (ties in the order seeded by the run's seed). The
events before it go through the shipped steps (bench/_shipped.shipped_home: import, `train`, `export`,
`publish`); every event after it is replayed in the log's order into the server's real-time updater (as
POST /v1/events delivers them). For up to MAX_EVENTS later events (a seeded sample) of users with history
before the split, the next product is predicted twice, each time over the whole catalogue with every
product the user touched before it left out:
- real-time: the server's answer (Serving.recommend, rules off) just before the event, every earlier event
  folded in by the updater;
- frozen: the same server's answer before any later event arrived (the user's state as of the training
  run): its whole candidate list (the server's n_candidates), the products touched since left out, cut to
  10 (`frozen_short` counts the lists that ran shorter than 10);
beside popularity (the training events' counts, the same exclusions). HR@10 and nDCG@10 of the next product.
"""

from __future__ import annotations

import numpy as np

from bench._shipped import K, shipped_home
from pocketrank.server.training.ranking_metrics import ndcg_at_k

MAX_EVENTS = 6000
QUANTILE = 0.8


def _score(lists: list[list[int]], targets: list[int]) -> dict:
    return {"HR@10": float(np.mean([t in ls[:K] for ls, t in zip(lists, targets)])),
            "nDCG@10": float(np.mean([ndcg_at_k(ls[:K], {t}, K) for ls, t in zip(lists, targets)]))}


def run(size: str, seed: int, log=print, train: dict | None = None, max_events: int = MAX_EVENTS) -> dict:
    import pyarrow as pa

    from bench._shipped_device import server_app
    from pocketrank.server.data import movielens
    from pocketrank.shared.schemas import Event

    tables = movielens.tables(size, ties="random", seed=seed)
    ev = tables.events  # in log order: time, then the seeded tie order
    ts = ev.column("timestamp").to_numpy()
    before = ts < np.quantile(ts, QUANTILE)
    users = ev.column("user_id").to_pylist()
    items = ev.column("item_id").to_pylist()
    types = ev.column("type").to_pylist()
    known = {u for u, b in zip(users, before) if b}
    later = np.flatnonzero(~before)
    eligible = [n for n in later if users[n] in known]
    rng = np.random.default_rng(0)
    asked = set(eligible if len(eligible) <= max_events else rng.choice(eligible, max_events, replace=False).tolist())
    with shipped_home(tables, ev.filter(pa.array(before)), seed, train) as (home, store, out):
        index = {it.external_id: it.item_id for it in store.items()}
        app = server_app(home.root)
        serving = app.extensions["pocketrank"]
        seen: dict[str, list[int]] = {}
        for u, i, b in zip(users, items, before):
            if b:
                seen.setdefault(u, []).append(index[i])
        wide = serving.config.n_candidates
        frozen_top = {u: [i for i, _ in serving.recommend(u, wide).items] for u in {users[n] for n in asked}}
        counts = store.item_counts()
        popular = sorted(counts, key=lambda i: (-counts[i], i))
        updater = serving.updater
        lists: dict[str, list[list[int]]] = {"real-time": [], "frozen": [], "popularity": []}
        targets, pending, short = [], [], 0
        for n in later:
            u, item = users[n], index[items[n]]
            if n in asked:
                if pending:
                    updater.ingest(pending, max_seconds=60.0)
                    pending = []
                earlier = set(seen[u])
                lists["real-time"].append([i for i, _ in serving.recommend(u, K).items])
                lists["frozen"].append([i for i in frozen_top[u] if i not in earlier][:K])
                short += len(lists["frozen"][-1]) < K
                lists["popularity"].append([i for i in popular[:K + len(earlier)] if i not in earlier][:K])
                targets.append(item)
            pending.append(Event(f"bench-p3-{n}", u, "bench", types[n], float(ts[n]), item))
            seen.setdefault(u, []).append(item)
        out["events"], out["frozen_short"] = len(targets), short
        out["models"] = {name: _score(ls, targets) for name, ls in lists.items()}
    m = out["models"]
    log(f"    protocol 3, {size} seed {seed}: {out['events']} later events; nDCG@10 real-time "
        f"{m['real-time']['nDCG@10']:.4f}, frozen {m['frozen']['nDCG@10']:.4f}, popularity "
        f"{m['popularity']['nDCG@10']:.4f} (train {out['timings']['train']:.0f} s)")
    return out
