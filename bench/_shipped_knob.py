"""The diversity knob on the shipped path: the per-category cap, on the server's answers and the device's.

The cap (`max_per_category`: at most N products of one category in a list) is the one list rule the server
and the device both apply, with the same function (pocketrank.shared.rules.apply_rules); the server's
setting travels to devices in the signed manifest's `rules`. Its trade-off curve on the model that ships:

per seed, the shipped path of bench/_shipped.py (MovieLens leave-last-out, ties by the seed's permutation:
import, `train`, `export`, `publish`) trained once; then for each cap in CAPS (None: no cap)
- server: Serving.recommend with that cap, the other rules off (bench/_shipped.RULES_OFF), every test user;
- device: each test user's phone (a real EdgeClient, synced once against the home) answering offline with
  that cap (the request's `max_per_category`, which the SDK takes before the manifest's: the same
  function either way).
Figures: HR@10, nDCG@10, coverage@10, the mean popularity percentile (bench/_shipped._metrics), and the
category diversity of the top 10: distinct categories (MovieLens: the film's first genre) and ILD@10, the
share of the list's pairs whose categories differ.
"""

from __future__ import annotations

import shutil
import tempfile
from itertools import combinations
from pathlib import Path

import numpy as np

from bench._shipped import K, _metrics, served, shipped_home, split_tables

CAPS: tuple[int | None, ...] = (None, 5, 3, 2, 1)


def diversity(lists: dict[str, list[int]], category: dict[int, str]) -> dict:
    """Mean distinct categories and ILD@10 (share of pairs of different categories) of the top K lists."""
    distinct, ild = [], []
    for ranked in lists.values():
        cats = [category.get(i, "") for i in ranked[:K]]
        distinct.append(len(set(cats)))
        pairs = list(combinations(cats, 2))
        ild.append(float(np.mean([a != b for a, b in pairs])) if pairs else 0.0)
    return {"categories@10": float(np.mean(distinct)), "ILD@10": float(np.mean(ild))}


def device_lists(home_root: Path, users: list[str], caps=CAPS) -> tuple[dict, dict[str, int]]:
    """{cap: {user: item ids}} of each user's phone, offline, one sync per phone; and the answers' sources."""
    from bench._shipped_device import phone, server_app

    app = server_app(home_root)
    key = (home_root / "keys" / "signing.pub").read_text().strip()
    out: dict = {cap: {} for cap in caps}
    sources: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="pocketrank-phones-") as tmp:
        for n, u in enumerate(users):
            db = Path(tmp) / f"phone-{n}" / "device.sqlite"
            db.parent.mkdir()
            client = phone(app, key, db)
            try:
                client.sync([u])
                for cap in caps:
                    rec = client.recommend(u, K, context={} if cap is None else {"max_per_category": cap},
                                           allow_server=False)
                    index = client.cache.indexes(rec.item_ids)
                    out[cap][u] = [index[i] for i in rec.item_ids]
                    for it in rec.items:
                        sources[it.source] = sources.get(it.source, 0) + 1
            finally:
                client.close()
                shutil.rmtree(db.parent)
    return out, sources


def run(size: str, seed: int, log=print, caps=CAPS, train: dict | None = None) -> dict:
    """One seed: {"server": {cap: figures}, "device": {cap: figures}, "sources": ..., "timings": ...}."""
    tables, train_events, test_events = split_tables(size, seed, "random", None)
    with shipped_home(tables, train_events, seed, train) as (home, store, out):
        users = test_events.column("user_id").to_pylist()
        category = {it.item_id: it.category or "" for it in store.items()}
        phones, out["sources"] = device_lists(home.root, users, caps)
        out["server"], out["device"] = {}, {}
        for cap in caps:
            ans = served(home, store, users, cap)
            truth = {u: ans.index[i] for u, i in zip(users, test_events.column("item_id").to_pylist())}
            for side, lists in (("server", ans.lists), ("device", phones[cap])):
                m = out[side][cap] = {**_metrics(lists, truth, ans.pop_pct, len(ans.ids)), **diversity(lists, category)}
                log(f"    knob {size} seed {seed} {side} cap {cap}: nDCG@10 {m['nDCG@10']:.4f} coverage@10 "
                    f"{m['coverage@10']:.4f} pop_pct {m['pop_pct']:.1f} categories@10 {m['categories@10']:.2f}")
    return out
