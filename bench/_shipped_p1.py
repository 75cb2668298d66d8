"""Protocol 1 on the shipped path: Microsoft Recommenders' split, answered by the server as it ships.

The split is the one `bench quality`'s protocol 1 table uses (lab/quality/splits.python_stratified_split:
per product, a seeded 75% of its ratings to training, seed 42), drawn over the ratings in their file's
order as the library draws it (`train_rows`), so every seed has the same split; the run's seed orders
equal timestamps and seeds training. The training rows go through the shipped steps
(bench/_shipped.shipped_home: import, `train`, `export`, `publish`); then the server's top 10
(Serving.recommend, business rules off, what the user rated in training left out) for every user with a
held-out rating, scored against all of that user's held-out ratings: nDCG@10, P@10, R@10 (binary gains,
as the library computes them), coverage@10 and the mean popularity percentile of what was shown. Peers
on the same training rows in the same run: popularity and EASE (its tuned lambda, lab/quality/defaults.py).
"""

from __future__ import annotations

import numpy as np

from bench._shipped import K, history_matrix, peer_lists, served, shipped_home
from lab.quality import peers
from lab.quality.defaults import DEFAULTS
from lab.quality.splits import python_stratified_split
from pocketrank.server.training.ranking_metrics import ndcg_at_k, precision_at_k, recall_at_k

SPLIT_SEED = 42  # the library's protocol fixes it; the run's seed varies the rest


def metrics(lists: dict[str, list[int]], truth: dict[str, set[int]], pop_pct: dict[int, float],
            n_items: int) -> dict:
    ndcg, prec, rec, shown, pct = [], [], [], set(), []
    for u, relevant in truth.items():
        ranked = lists.get(u, [])[:K]
        ndcg.append(ndcg_at_k(ranked, relevant, K))
        prec.append(precision_at_k(ranked, relevant, K))
        rec.append(recall_at_k(ranked, relevant, K))
        shown.update(ranked)
        pct += [pop_pct.get(i, 0.0) for i in ranked]
    return {"nDCG@10": float(np.mean(ndcg)), "P@10": float(np.mean(prec)), "R@10": float(np.mean(rec)),
            "coverage@10": len(shown) / n_items, "pop_pct": float(np.mean(pct)) if pct else 0.0}


def train_rows(size: str, events) -> np.ndarray:
    """The training mask over the importer's event rows (log order): the library's split, drawn over the
    ratings in their file's order. MovieLens-100k: u.data's order (lab/quality/data.movielens_100k, the
    protocol 1 table's rows), matched by (user, film); MovieLens-1M: ratings.dat's, from the event ids'
    row numbers (ml1m-<row>)."""
    users = events.column("user_id").to_pylist()
    items = events.column("item_id").to_pylist()
    if size == "100k":
        from lab.quality.data import movielens_100k

        d = movielens_100k()
        mask = python_stratified_split(d.users, d.items, 0.75, "item", SPLIT_SEED)
        train = {(d.user_ids[u], d.item_ids[i]) for u, i in zip(d.users[mask], d.items[mask])}
        return np.array([(u, i) in train for u, i in zip(users, items)], dtype=bool)
    order = np.argsort([int(e.rsplit("-", 1)[1]) for e in events.column("event_id").to_pylist()], kind="stable")
    keys = np.unique(np.asarray(items, dtype=object)[order], return_inverse=True)[1]
    mask = np.zeros(len(users), dtype=bool)
    mask[order] = python_stratified_split(np.zeros(len(order), np.int64), keys, 0.75, "item", SPLIT_SEED)
    return mask


def run(size: str, seed: int, log=print, train: dict | None = None) -> dict:
    """One seed's figures; `train`: more train_job arguments (a quick look: {"epochs": 1})."""
    import pyarrow as pa

    from pocketrank.server.data import movielens

    tables = movielens.tables(size, ties="random", seed=seed)
    users = np.asarray(tables.events.column("user_id").to_pylist(), dtype=object)
    items = np.asarray(tables.events.column("item_id").to_pylist(), dtype=object)
    keep = train_rows(size, tables.events)
    with shipped_home(tables, tables.events.filter(pa.array(keep)), seed, train) as (home, store, out):
        held: dict[str, set[str]] = {}
        for u, i in zip(users[~keep], items[~keep]):
            held.setdefault(u, set()).add(i)
        ans = served(home, store, sorted(held))
        truth = {u: {ans.index[i] for i in its} for u, its in held.items()}
        out["server"] = metrics(ans.lists, truth, ans.pop_pct, len(ans.ids))
        out["peers"] = _peers(store, truth, ans)
    log(f"    protocol 1, {size} seed {seed}: server nDCG@10 {out['server']['nDCG@10']:.4f} P@10 "
        f"{out['server']['P@10']:.4f}; EASE {out['peers']['EASE']['nDCG@10']:.4f} (epoch {out['best_epoch']}, "
        f"train {out['timings']['train']:.0f} s)")
    return out


def _peers(store, truth: dict[str, set[int]], ans) -> dict:
    from pocketrank.server.training.history import load_history

    h = load_history(store)
    X = history_matrix(h)
    users = [k for k, u in enumerate(h.user_ids) if u in truth]
    scores_of = {name: model.fit(X).scores(np.array(users))
                 for name, model in (("popularity", peers.Popularity()), ("EASE", peers.EASE(DEFAULTS["ease_lambda"])))}
    return {name: metrics(lists, truth, ans.pop_pct, len(ans.ids))
            for name, lists in peer_lists(h, users, scores_of).items()}
