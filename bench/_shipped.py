"""The shipped path, end to end, on MovieLens: what `bench quality` reports as pocketrank's figures.

One run (a data set, a seed, a tie order):
1. the MovieLens importer's tables (ties in the log ordered by a permutation seeded by the run's seed, or
   in file order; optionally the catalogue relabelled), each user's newest rating set aside as the test
   event, everything else imported into a fresh SQLite home with the real importers;
2. `pocketrank train` (the sequence model, every user's newest stored product picking the epoch: the
   protocol's validation item), `pocketrank export`, `pocketrank publish`, as the CLI runs them;
3. (a) the server's answer: pocketrank.server.online.serving.Serving.recommend for every test user, business rules
   off (no category weight, no exposure penalty, no exploration slot), the user's history excluded as the
   server excludes what a user consumed; HR@10, nDCG@10, coverage@10 and the mean popularity percentile
   of what was shown;
   (b) with `with_device`, the device's answer offline right after a sync (bench/_shipped_device.py);
4. the peers on the same split in the same run: popularity, EASE, implicit ALS (their tuned settings,
   lab/quality/defaults.py) and the research sequence tower (lab/quality/seqrec.py), full ranking with the
   history excluded.
"""

from __future__ import annotations

import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lab.quality import peers
from lab.quality.defaults import DEFAULTS
from pocketrank.server.training.ranking_metrics import ndcg_at_k

K = 10
# The server's business rules off (no category weight, no exposure penalty, no exploration slot): the
# figures are the model's.
RULES_OFF = {"category_weight": 0.0, "exposure_cap": 10**9, "exposure_penalty": 0.0, "explore_position": 0}


def split_tables(size: str, seed: int, ties: str, relabel: int | None):
    """(tables with the test events removed, test event table) from the MovieLens importer's tables."""
    import pyarrow as pa

    from pocketrank.server.data import movielens

    t = movielens.tables(size, ties=ties, seed=seed, relabel=relabel)
    users = np.asarray(t.events.column("user_id").to_pylist(), dtype=object)
    # The log's order is (time, user, tie order): a user's newest event is the last row naming them.
    last: dict[str, int] = {}
    for k, u in enumerate(users):
        last[u] = k
    is_test = np.zeros(len(users), dtype=bool)
    is_test[list(last.values())] = True
    return t, t.events.filter(pa.array(~is_test)), t.events.filter(pa.array(is_test))


def _metrics(lists: dict[str, list[int]], truth: dict[str, int], pop_pct: dict[int, float], n_items: int) -> dict:
    hits, ndcg, shown, pct = [], [], set(), []
    for u, target in truth.items():
        ranked = lists.get(u, [])[:K]
        hits.append(float(target in ranked))
        ndcg.append(ndcg_at_k(ranked, {target}, K))
        shown.update(ranked)
        pct += [pop_pct.get(i, 0.0) for i in ranked]
    return {"HR@10": float(np.mean(hits)), "nDCG@10": float(np.mean(ndcg)),
            "coverage@10": len(shown) / n_items, "pop_pct": float(np.mean(pct)) if pct else 0.0}


@contextmanager
def shipped_home(tables, train_events, seed: int, train: dict | None = None):
    """A fresh home through the shipped steps: import (the catalogue, `train_events`, the users' attributes),
    `train` (the sequence model; `train`: more train_job arguments), `export`, `publish`. Yields (home, store,
    out) with out's timings, best epoch, validation nDCG@10 and encoder parity; the home is gone after."""
    from pocketrank.server.bundle.publish import publish_job
    from pocketrank.server.data.importer import import_catalogue, import_events
    from pocketrank.server.home import Home
    from pocketrank.server.jobs.train import export_job, train_job

    out: dict = {"timings": {}}
    with tempfile.TemporaryDirectory(prefix="pocketrank-shipped-") as tmp:
        t = time.perf_counter()
        home = Home(Path(tmp) / "home")
        store = home.store()
        import_catalogue(store, tables.catalogue, progress=False)
        import_events(store, train_events, progress=False)
        store.put_profiles(tables.user_features)
        out["timings"]["import"] = time.perf_counter() - t
        t = time.perf_counter()
        trained = train_job(home, kind="sequence", seed=seed, progress=False, holdout=1, **(train or {}))
        out["timings"]["train"] = time.perf_counter() - t
        out["best_epoch"], out["val_nDCG@10"] = trained["best_epoch"], trained["evaluation"]["val"]["retrieval"]["nDCG@10"]
        r = trained["ranker"]
        out["ranker"] = {"kind": r["kind"], **({"val_retrieval_nDCG@10": r["val"]["retrieval"]["nDCG@10"],
                                                 "val_ranker_nDCG@10": r["val"]["ranker"]["nDCG@10"],
                                                 "seconds": r["seconds"]} if "val" in r else {})}
        t = time.perf_counter()
        exported = export_job(home)
        out["timings"]["export"] = time.perf_counter() - t
        out["parity"] = {k: exported["parity"][k] for k in ("ndcg10_fp32", "ndcg10_int8", "int8_ndcg10_kept",
                                                              "int8_mean_top10_overlap")}
        t = time.perf_counter()
        publish_job(home, progress=False)
        out["timings"]["publish"] = time.perf_counter() - t
        try:
            yield home, store, out
        finally:
            store.close()


@dataclass
class Served:
    lists: dict[str, list[int]]  # user -> the server's top K item ids
    index: dict[str, int]  # the catalogue's external id -> item id
    pop_pct: dict[int, float]  # item id -> popularity percentile among the training events
    ids: list[int]  # every item id, ascending
    ms_per_user: float


def scoring_inputs(store) -> tuple[dict[str, int], dict[int, float], list[int]]:
    """(the catalogue's external id -> item id, item id -> popularity percentile among the stored events,
    every item id ascending): what scoring a list needs besides the truth."""
    index = {it.external_id: it.item_id for it in store.items()}
    counts = store.item_counts()
    ids = sorted(index.values())
    pop = np.array([counts.get(i, 0) for i in ids], dtype=np.float64)
    return index, dict(zip(ids, 100.0 * pop.argsort().argsort() / max(len(ids) - 1, 1))), ids


def served(home, store, users, max_per_category: int | None = None, popular_penalty: float = 0.0) -> Served:
    """The server's answers (Serving.recommend, business rules off but for the per-category cap and the
    popularity knob, if given) for `users`, and what scoring them needs."""
    from pocketrank.server.config import Config
    from pocketrank.server.online.serving import Serving

    index, pop_pct, ids = scoring_inputs(store)
    serving = Serving(Config(home=home.root, max_per_category=max_per_category, popular_penalty=popular_penalty,
                             **RULES_OFF))
    try:
        t = time.perf_counter()
        lists = {u: [i for i, _ in serving.recommend(u, K).items] for u in users}
        return Served(lists, index, pop_pct, ids, (time.perf_counter() - t) / max(len(lists), 1) * 1000)
    finally:
        serving.store.close()


def run(size: str, seed: int, ties: str = "random", relabel: int | None = None, with_peers: bool = True,
        log=print, with_device: bool = False, train: dict | None = None) -> dict:
    """The shipped path on one split; `train`: more train_job arguments (epochs, ray_workers)."""
    t0 = time.perf_counter()
    tables, train_events, test_events = split_tables(size, seed, ties, relabel)
    split = time.perf_counter() - t0
    with shipped_home(tables, train_events, seed, train) as (home, store, out):
        out["timings"]["import"] += split  # reading MovieLens's files is part of its import
        test_users = test_events.column("user_id").to_pylist()
        ans = served(home, store, test_users)
        truth = {u: ans.index[i] for u, i in zip(test_users, test_events.column("item_id").to_pylist())}
        out["timings"]["serve_per_user_ms"] = ans.ms_per_user
        out["server"] = _metrics(ans.lists, truth, ans.pop_pct, len(ans.ids))
        log(f"    {size} seed {seed} ties {ties}{'' if relabel is None else ' relabelled'}: server "
            f"HR@10 {out['server']['HR@10']:.4f} nDCG@10 {out['server']['nDCG@10']:.4f} "
            f"(epoch {out['best_epoch']}, train {out['timings']['train']:.0f} s)")
        if with_device:  # protocol 4, fresh cache: each test user's phone synced against this home, offline
            from bench import _shipped_device

            out["device"] = _shipped_device.fresh(home, truth, ans.lists, ans.pop_pct, len(ans.ids), log)
        if with_peers:
            out["peers"] = _peers(store, truth, seed, ans.pop_pct, ans.ids)
            for name, m in out["peers"].items():
                log(f"      {name:22s} HR@10 {m['HR@10']:.4f} nDCG@10 {m['nDCG@10']:.4f}")
    out["timings"]["total"] = time.perf_counter() - t0
    return out


def history_matrix(h):
    """The users x products 0/1 matrix of a training.history.History (rows: its users, columns: model rows)."""
    return peers.binary_matrix(np.repeat(np.arange(len(h.seqs)), [len(s) for s in h.seqs]),
                               np.concatenate(h.seqs), len(h.seqs), h.n_items)


def peer_lists(h, users: list[int], scores_of: dict) -> dict[str, dict[str, list[int]]]:
    """Each peer's top K (item ids) per user from its (len(users), products) scores, the user's stored
    history left out, ties by model row."""
    out = {}
    for name, s in scores_of.items():
        s = np.array(s, dtype=np.float64, copy=True)
        for j, u in enumerate(users):
            s[j, h.seqs[u]] = -np.inf
        top = np.argsort(-s, axis=1, kind="stable")[:, :K]
        out[name] = {h.user_ids[u]: [int(h.item_index[c]) for c in top[j]] for j, u in enumerate(users)}
    return out


def _peers(store, truth: dict[str, int], seed: int, pop_pct, ids: list[int]) -> dict:
    """Popularity, EASE, ALS and the research sequence tower on the store's training events."""
    from lab.quality.seqrec import SeqConfig, fit, score
    from pocketrank.server.training.history import load_history

    h = load_history(store)
    X = history_matrix(h)
    users = [k for k, u in enumerate(h.user_ids) if u in truth]
    models = {"popularity": peers.Popularity(), "EASE": peers.EASE(DEFAULTS["ease_lambda"]),
              "implicit ALS": peers.ImplicitALS(seed=seed, **DEFAULTS["als"])}
    scores_of = {name: m.fit(X).scores(np.array(users)) for name, m in models.items()}
    # Its validation item is each user's newest stored product, as the shipped model's; then it ranks
    # from the whole stored history, as the server does.
    head = [s[:-1] if len(s) >= 2 else s for s in h.seqs]
    tower, _ = fit(head, SeqConfig(n_items=h.n_items, seed=seed, epochs=60),
                   val=(head, np.array([s[-1] if len(s) >= 2 else -1 for s in h.seqs])))
    scores_of["research seq tower"] = score(tower, [h.seqs[u] for u in users])
    truth_of = {h.user_ids[u]: truth[h.user_ids[u]] for u in users}
    return {name: _metrics(lists, truth_of, pop_pct, len(ids)) for name, lists in peer_lists(h, users, scores_of).items()}
