"""Cold-start users and new products on the shipped path: what the server answers someone it has never seen,
and how it ranks products no training run has seen.

Both start from MovieLens (ties in a seeded random order) imported with the real importers into a fresh
home, then `train` (the sequence model), `export`, `features` (segment vectors from the warm users'
profiles), as the CLI runs them; the answers are pocketrank.server.online.serving.Serving's with business rules off.

Cold users: 10% of the users (seeded) are left out of the import entirely. For each, every product they
rated is the truth, and the server answers
- with nothing: the popular list (the last resort);
- with their profile (age band, gender, occupation: what a first request's attributes carry): the segment's
  vector, the mean of the warm users of that segment;
- after their first rating, posted as an event through the embedded updater: the encoder over that one event
  (the truth is then the rest), against the popular list without that product, and beside a peer that reads
  that one rating as well as anything can on this data: the products most often rated by the warm users who
  rated it (item co-occurrence, ties by popularity); and, the same answers, against the one rating that came
  next (what a sequence model is trained to rank), not the whole rest.
The first rating is the earliest, ratings in the same second taken in the import's seeded order (never the
product ids' order, which in MovieLens rises with time).
MovieLens carries age, gender and occupation, no locale, device or query: those are not measured here.
`train` caps the training run (its epochs) where a full one does not fit: the popularity, segment and
co-occurrence rows do not depend on the model.

New products: 10% of the rated products (seeded) have every event left out of the import, so training never
sees them; their vectors are the content tower's (title tokens, category, price: what `POST /v1/items`
gives a product without retraining). Each user who rated some of them ranks all of them with the server's
user vector (the encoder over their imported events) against the stored vectors; nDCG@10 and P@10 against
what they rated, beside a random order of the same products (the mean of 50 shuffles).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from pocketrank.server.training.ranking_metrics import ndcg_at_k

K = 10


def _scores(ranked: list[int], truth: set[int]) -> tuple[float, float, float]:
    hits = sum(i in truth for i in ranked[:K])
    return ndcg_at_k(ranked, truth, K), hits / K, hits / max(len(truth), 1)


def _home(tmp: Path, tables, events, profiles: dict, seed: int, train: dict | None = None):
    from pocketrank.server.data.importer import import_catalogue, import_events
    from pocketrank.server.home import Home
    from pocketrank.server.jobs.features import features_job, latest_timestamp
    from pocketrank.server.jobs.train import export_job, train_job
    from pocketrank.server.online.encoding import record_vector_fn

    home = Home(tmp / "home")
    store = home.store()
    import_catalogue(store, tables.catalogue, progress=False)
    import_events(store, events, progress=False)
    store.put_profiles(profiles)
    t = time.perf_counter()
    trained = train_job(home, kind="sequence", seed=seed, progress=False, holdout=1, **(train or {}))
    export_job(home, n_users=200)
    features_job(store, latest_timestamp(store) + 1, profiles, user_vector_of=record_vector_fn(home, store))
    return home, store, trained, time.perf_counter() - t


def _held_out(size: str, seed: int, column: str, share: float, rng: np.random.Generator, at_least: int):
    """(MovieLens tables, the `share` (at least `at_least`) of `column`'s values drawn by `rng`, the mask of
    their events)."""
    from pocketrank.server.data import movielens

    tables = movielens.tables(size, ties="random", seed=seed)
    values = np.asarray(tables.events.column(column).to_pylist(), dtype=object)
    ids = sorted(set(values.tolist()))
    drawn = rng.choice(ids, size=max(at_least, int(share * len(ids))), replace=False)
    held = set(drawn.tolist())
    return tables, held, np.array([v in held for v in values])


def _serving(home):
    from pocketrank.server.config import Config
    from pocketrank.server.online.serving import Serving

    return Serving(Config(home=home.root, category_weight=0.0, exposure_cap=10**9, exposure_penalty=0.0,
                          explore_position=0))


def _cooccurrence(events, index: dict, n: int):
    """The warm users x products 0/1 matrix (scipy CSR, columns: store item ids) of `events`."""
    from scipy import sparse

    users = {u: k for k, u in enumerate(sorted(set(events.column("user_id").to_pylist())))}
    rows = [users[u] for u in events.column("user_id").to_pylist()]
    cols = [index[i] for i in events.column("item_id").to_pylist()]
    m = sparse.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(users), n))
    m.data[:] = 1.0  # a user rating a product twice is one co-rating
    return m


def cold_users(size: str, seed: int, share: float = 0.1, log=print, train: dict | None = None) -> dict:
    import pyarrow as pa

    from pocketrank.shared.schemas import Event

    tables, cold, is_cold = _held_out(size, seed, "user_id", share, np.random.default_rng(seed), 1)
    warm_profiles = {u: p for u, p in tables.user_features.items() if u not in cold}
    with tempfile.TemporaryDirectory(prefix="pocketrank-cold-") as tmp:
        warm_ev = tables.events.filter(pa.array(~is_cold))
        home, store, trained, took = _home(Path(tmp), tables, warm_ev, warm_profiles, seed, train)
        index = {it.external_id: it.item_id for it in store.items()}
        m = _cooccurrence(warm_ev, index, max(index.values()) + 1)
        mt = m.T.tocsr()
        cold_ev = tables.events.filter(pa.array(is_cold))
        per_user: dict[str, list[tuple[float, int]]] = {}
        for u, i, t in zip(cold_ev.column("user_id").to_pylist(), cold_ev.column("item_id").to_pylist(),
                           cold_ev.column("timestamp").to_pylist()):
            per_user.setdefault(u, []).append((t, index[i]))
        counts = store.item_counts()
        popular = sorted(counts, key=lambda i: (-counts[i], i))
        rank = {i: r for r, i in enumerate(popular)}
        serving = _serving(home)
        rows: dict[str, list[tuple[float, float, float]]] = {"popularity": [], "segment prior": [],
                                                             "popularity, after 1 rating": [],
                                                             "encoder, after 1 rating": [],
                                                             "co-occurrence, after 1 rating (peer)": [],
                                                             "popularity, after 1 rating: the next": [],
                                                             "encoder, after 1 rating: the next": [],
                                                             "co-occurrence, after 1 rating: the next (peer)": []}
        paths = {"segment": 0, "popular": 0}
        for u, evs in sorted(per_user.items()):
            truth = {i for _, i in evs}
            rows["popularity"].append(_scores([i for i, _ in serving.recommend(u, K).items], truth))
            rec = serving.recommend(u, K, dict(tables.user_features.get(u, {})))
            paths[rec.path if rec.path in paths else "popular"] += 1
            rows["segment prior"].append(_scores([i for i, _ in rec.items], truth))
            if len(truth) < 2:
                continue
            ordered = sorted(evs, key=lambda e: e[0])  # stable: ties stay in the import's seeded order
            (t0, first), nxt = ordered[0], {ordered[1][1]}
            serving.updater.ingest([Event(f"cold-{u}-0", u, "bench", "click", float(t0), int(first))])
            rest = truth - {first}
            co = np.asarray((mt @ m[:, first]).todense()).ravel()  # warm users who rated `first`, per product
            lists = {"popularity": [i for i in popular if i != first][:K],
                     "encoder": [i for i, _ in serving.recommend(u, K).items],
                     "co-occurrence": sorted((i for i in range(len(co)) if i != first and i in rank),
                                             key=lambda i: (-co[i], rank[i]))[:K]}
            for name, ranked in lists.items():
                peer = " (peer)" if name == "co-occurrence" else ""
                rows[f"{name}, after 1 rating{peer}"].append(_scores(ranked, rest))
                rows[f"{name}, after 1 rating: the next{peer}"].append(_scores(ranked, nxt))
        store.close()
    out = {name: {"nDCG@10": float(np.mean([r[0] for r in rs])), "P@10": float(np.mean([r[1] for r in rs])),
                  "R@10": float(np.mean([r[2] for r in rs])), "users": len(rs)} for name, rs in rows.items()}
    out["paths"] = paths
    out["train_seconds"] = took
    log(f"    cold users {size} seed {seed}: " + ", ".join(
        f"{n} nDCG@10 {m['nDCG@10']:.4f}" for n, m in out.items() if isinstance(m, dict) and "nDCG@10" in m))
    return out


def new_items(size: str, seed: int, share: float = 0.1, log=print, train: dict | None = None) -> dict:
    import pyarrow as pa


    rng = np.random.default_rng(seed)  # draws the held-out products, then the random orders
    tables, held, is_new = _held_out(size, seed, "item_id", share, rng, 2)
    with tempfile.TemporaryDirectory(prefix="pocketrank-new-") as tmp:
        home, store, trained, took = _home(Path(tmp), tables, tables.events.filter(pa.array(~is_new)),
                                           dict(tables.user_features), seed, train)
        index = {it.external_id: it.item_id for it in store.items()}
        new_ids = np.array(sorted(index[i] for i in held), dtype=np.int64)
        provisional = store.provisional_items()
        new_ev = tables.events.filter(pa.array(is_new))
        truth: dict[str, set[int]] = {}
        for u, i in zip(new_ev.column("user_id").to_pylist(), new_ev.column("item_id").to_pylist()):
            truth.setdefault(u, set()).add(index[i])
        serving = _serving(home)
        serving.refresh()
        vr = serving.version_ranker(serving.live_version())
        cat = serving.catalogue
        vecs = cat.vector_map()
        V = np.stack([vecs[int(i)] for i in new_ids])
        model, rand = [], []
        for u, t in sorted(truth.items()):
            uv = vr.user_vector(store.user_context(u, cat.dim))
            if uv is None:
                continue
            order = new_ids[np.argsort(-(V @ uv), kind="stable")].tolist()
            model.append(_scores(order, t))
            rand.append(np.mean([_scores(rng.permutation(new_ids).tolist(), t)[:2] for _ in range(50)], axis=0))
        store.close()
    out = {"new products": len(new_ids), "content vectors": len(set(new_ids.tolist()) & provisional),
           "users": len(model), "model": {"nDCG@10": float(np.mean([r[0] for r in model])),
                                          "P@10": float(np.mean([r[1] for r in model]))},
           "random": {"nDCG@10": float(np.mean([r[0] for r in rand])), "P@10": float(np.mean([r[1] for r in rand]))},
           "train_seconds": took}
    out["ratio"] = out["model"]["nDCG@10"] / max(out["random"]["nDCG@10"], 1e-12)
    log(f"    new products {size} seed {seed}: {out['new products']} held out ({out['content vectors']} with content "
        f"vectors), {out['users']} users: nDCG@10 {out['model']['nDCG@10']:.4f} vs random "
        f"{out['random']['nDCG@10']:.4f} ({out['ratio']:.2f}x)")
    return out
