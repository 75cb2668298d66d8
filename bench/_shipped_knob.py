"""The list knobs on the shipped path, on the server's answers and the device's.

Two knobs the server and the device both apply with the same function, the server's setting travelling to
devices in the signed manifest's `rules`:
- the per-category cap (`max_per_category`: at most N products of one category in a list;
  pocketrank.shared.rules.apply_rules): diversity within a list;
- the popularity knob (`popular_penalty`: the signed popular list's products have their click odds divided by
  up to e^value, the most popular the most; pocketrank.shared.rules.demote_popular): exposure across the
  catalogue.
Their trade-off curves on the model that ships:

per seed, the shipped path of bench/_shipped.py (MovieLens leave-last-out, ties by the seed's permutation:
import, `train`, `export`, `publish`) trained once; then for each setting of KNOBS (the knob off first)
- server: Serving.recommend with that setting, the other rules off (bench/_shipped.RULES_OFF), every test user;
- device: each test user's phone (a real EdgeClient, synced once against the home) answering offline with
  that setting (the request's context, which the SDK takes before the manifest's: the same function either
  way).
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
PENALTIES: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)  # log-odds: the most popular's odds / e^value
# Each knob's settings, off first; a setting is its value (None / 0: off).
KNOBS: dict[str, tuple] = {"max_per_category": CAPS, "popular_penalty": PENALTIES}


def settings(knobs=KNOBS) -> list[tuple[str, object]]:
    """(knob, value) pairs to measure: one shared "off" point, then each knob's other values."""
    out: list[tuple[str, object]] = [("off", None)]
    for name, values in knobs.items():
        out += [(name, v) for v in values if v]
    return out


def diversity(lists: dict[str, list[int]], category: dict[int, str]) -> dict:
    """Mean distinct categories and ILD@10 (share of pairs of different categories) of the top K lists."""
    distinct, ild = [], []
    for ranked in lists.values():
        cats = [category.get(i, "") for i in ranked[:K]]
        distinct.append(len(set(cats)))
        pairs = list(combinations(cats, 2))
        ild.append(float(np.mean([a != b for a, b in pairs])) if pairs else 0.0)
    return {"categories@10": float(np.mean(distinct)), "ILD@10": float(np.mean(ild))}


def device_lists(home_root: Path, users: list[str], points) -> tuple[dict, dict[str, int]]:
    """{(knob, value): {user: item ids}} of each user's phone, offline, one sync per phone; and the answers'
    sources."""
    from bench._shipped_device import phone, server_app

    app = server_app(home_root)
    key = (home_root / "keys" / "signing.pub").read_text().strip()
    out: dict = {p: {} for p in points}
    sources: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="pocketrank-phones-") as tmp:
        for n, u in enumerate(users):
            db = Path(tmp) / f"phone-{n}" / "device.sqlite"
            db.parent.mkdir()
            client = phone(app, key, db)
            try:
                client.sync([u])
                for knob, value in points:
                    rec = client.recommend(u, K, context={} if value is None else {knob: value}, allow_server=False)
                    index = client.cache.indexes(rec.item_ids)
                    out[(knob, value)][u] = [index[i] for i in rec.item_ids]
                    for it in rec.items:
                        sources[it.source] = sources.get(it.source, 0) + 1
            finally:
                client.close()
                shutil.rmtree(db.parent)
    return out, sources


def run(size: str, seed: int, log=print, knobs=KNOBS, train: dict | None = None) -> dict:
    """One seed: {"server": {(knob, value): figures}, "device": {(knob, value): figures}, "sources": ...,
    "timings": ...}."""
    points = settings(knobs)
    tables, train_events, test_events = split_tables(size, seed, "random", None)
    with shipped_home(tables, train_events, seed, train) as (home, store, out):
        users = test_events.column("user_id").to_pylist()
        category = {it.item_id: it.category or "" for it in store.items()}
        phones, out["sources"] = device_lists(home.root, users, points)
        out["server"], out["device"] = {}, {}
        for knob, value in points:
            ans = served(home, store, users, **({} if value is None else {knob: value}))
            truth = {u: ans.index[i] for u, i in zip(users, test_events.column("item_id").to_pylist())}
            for side, lists in (("server", ans.lists), ("device", phones[(knob, value)])):
                m = out[side][(knob, value)] = {**_metrics(lists, truth, ans.pop_pct, len(ans.ids)),
                                                **diversity(lists, category)}
                log(f"    knob {size} seed {seed} {side} {knob} {value}: nDCG@10 {m['nDCG@10']:.4f} coverage@10 "
                    f"{m['coverage@10']:.4f} pop_pct {m['pop_pct']:.1f} categories@10 {m['categories@10']:.2f}")
    return out
