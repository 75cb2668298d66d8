"""New products' vectors between training runs: content-only vs refreshed vs random, on MovieLens-100k.

    python -m bench refresh_items

Real data, the real model: 100 films with at least 30 ratings are held out of training (the
Recommender is trained, as `pocketrank train` trains it, on every other rating). Each held-out film
then "arrives": it gets pocketrank.server.online.catalogue.provisional_vector (genre centroid + title neighbours),
collects its first N ratings (N = 3 and 10), and pocketrank.server.jobs.refresh_items refreshes its vector from
them. Judged on the film's next 20 ratings, each asked as the server asks it: the user's history
(trained films rated before it) pooled into a user vector, every film ranked (the user's history
excluded): HR@10 and nDCG@10 of the served list (retrieval top 200 reranked by the click model),
recall@200 of retrieval alone (can the film be retrieved at all) and the film's mean percentile rank
by retrieval (0 = top). The other held-out films keep their content vectors in every variant.
"""

from __future__ import annotations

import sys
import time

import numpy as np

N_NEW, MIN_RATINGS, N_JUDGED, EPOCHS, SEED = 100, 30, 20, 4, 0
CHOSEN = "shrunk mean, shrink 2, 1 x typical length"  # what refresh_items_job does


def main(argv: list[str]) -> int:
    import torch

    from pocketrank.server.data import movielens
    from pocketrank.server.jobs.refresh_items import engagement_vectors, gradient_steps, shrunk_mean
    from pocketrank.server.online.catalogue import Catalogue, provisional_vector
    from pocketrank.server.training import ranking_metrics as metrics
    from pocketrank.server.training.evaluate import pooled_user
    from pocketrank.server.training.model import ModelConfig
    from pocketrank.server.training.train import train
    from pocketrank.shared.schemas import Event

    start = time.perf_counter()
    ml = movielens.load()
    counts = np.bincount(ml.items, minlength=ml.n_items)
    rng = np.random.default_rng(SEED)
    new = np.sort(rng.choice(np.nonzero(counts >= MIN_RATINGS)[0], N_NEW, replace=False))
    is_new = np.zeros(ml.n_items, dtype=bool)
    is_new[new] = True
    keep = ~is_new[ml.items]
    seqs: list[list[int]] = [[] for _ in range(ml.n_users)]
    for u, i in zip(ml.users[keep].tolist(), ml.items[keep].tolist()):
        seqs[u].append(i)
    config = ModelConfig(n_items=ml.n_items, epochs=EPOCHS, seed=42)
    model = train([np.array(s, dtype=np.int64) for s in seqs], config, progress=True).model
    vecs = model.item_vectors().detach().numpy().copy()
    print(f"trained on {int(keep.sum()):,} ratings without the {N_NEW} held-out films in {time.perf_counter() - start:.0f} s")

    ids = ml.item_ids.astype(np.int64)  # index -> item id
    cat = Catalogue(ids, vecs, {}, {it.item_id: it.category for it in ml.catalogue},
                    frozenset(ids[new].tolist()), {it.item_id: it.title for it in ml.catalogue})
    by_id = {it.item_id: it for it in ml.catalogue}
    content = {int(i): provisional_vector(by_id[int(ids[i])], cat) for i in new}
    trained = {int(ids[i]): vecs[i] for i in range(ml.n_items) if not is_new[i]}
    norm = float(np.median(np.linalg.norm(vecs[~is_new], axis=1)))  # a trained film's typical length

    # Per new film, its ratings in time order: the first N collected, the next N_JUDGED judged.
    order = np.nonzero(is_new[ml.items])[0]
    per_item: dict[int, list[int]] = {}
    for r in order.tolist():
        per_item.setdefault(int(ml.items[r]), []).append(r)
    events = [Event(f"r{r}", str(u), "ml", "click", float(t), int(ids[i]))
              for r, (u, i, t) in enumerate(zip(ml.users.tolist(), ml.items.tolist(), ml.timestamps.tolist()))]
    user_rows: list[list[int]] = [[] for _ in range(ml.n_users)]  # rating rows per user, in time order
    for r, u in enumerate(ml.users.tolist()):
        user_rows[u].append(r)
    pos_in_user = np.zeros(len(ml.users), dtype=np.int64)
    for rows in user_rows:
        pos_in_user[rows] = np.arange(len(rows))

    results = {}
    for n_collected in (3, 10):
        collected = {r for rows in per_item.values() for r in rows[:n_collected]}
        judged = [r for rows in per_item.values() for r in rows[n_collected:n_collected + N_JUDGED]]
        feed = [e for r, e in enumerate(events) if not is_new[ml.items[r]] or r in collected]
        engaged = engagement_vectors(feed, trained, {int(ids[i]) for i in new}, config.dim)
        others = vecs[~is_new]

        def variant(fn) -> np.ndarray:
            v = vecs.copy()
            for i in new:
                v[i] = content[int(i)]  # the others stay content-only
            for i in new:
                v[i] = fn(int(i), engaged.get(int(ids[i]), []))
            return v

        rand = np.random.default_rng(1)
        variants = {
            "random": variant(lambda i, e: (lambda x: x / np.linalg.norm(x) * norm)(rand.normal(size=config.dim))),
            "content only (provisional_vector)": variant(lambda i, e: content[i]),
            "shrunk mean, shrink 2, its own length": variant(lambda i, e: shrunk_mean(content[i], e, 2)),
            **{f"shrunk mean, shrink {s:g}, {m:g} x typical length": variant(
                lambda i, e, s=s, m=m: shrunk_mean(content[i], e, s, norm=m * norm))
               for s, m in ((2, 1), (0.5, 1), (8, 1), (2, 1.5), (2, 2))},
            "gradient, 5 steps, typical length": variant(lambda i, e: (lambda v: v / np.linalg.norm(v) * norm)(
                gradient_steps(content[i], e, others, steps=5))),
            "gradient, 5 steps, free length": variant(lambda i, e: gradient_steps(content[i], e, others, steps=5)),
        }
        # Control cases: the same users' next rating of a trained film after each judged one. A
        # variant that wins new films' cases by blowing up their vectors pushes these out of the top 10.
        control = []
        for r in judged:
            u = int(ml.users[r])
            nxt = [x for x in user_rows[u][pos_in_user[r] + 1:] if not is_new[ml.items[x]]]
            if nxt:
                control.append(nxt[0])

        def judge(v, cases):
            hr, nd, rec, pct = [], [], [], []
            for r in cases:
                u, target = int(ml.users[r]), int(ml.items[r])
                hist_rows = user_rows[u][: pos_in_user[r]]
                hist = np.array([ml.items[x] for x in hist_rows if not is_new[ml.items[x]]], dtype=np.int64)
                seen = np.array([ml.items[x] for x in hist_rows], dtype=np.int64)
                uv = pooled_user(v, hist, config.history)
                s = v @ uv
                s[seen] = -np.inf
                top = np.argsort(-s, kind="stable")[:200]
                with torch.no_grad():
                    p = model.click(torch.from_numpy(uv[None].astype(np.float32)),
                                    torch.from_numpy(v[top].astype(np.float32))).numpy()
                ranked = top[np.argsort(-p, kind="stable")][:10].tolist()
                hr.append(metrics.hit_rate_at_k(ranked, {target}, 10))
                nd.append(metrics.ndcg_at_k(ranked, {target}, 10))
                rec.append(float(target in top))
                pct.append(float(np.sum(s > s[target])) / np.isfinite(s).sum())
            return np.mean(hr), np.mean(nd), np.mean(rec), np.mean(pct)

        for name, v in variants.items():
            results[(n_collected, name)] = (*judge(v, judged), judge(v, control)[0], len(judged), len(control))

    print(f"\nNew films' next {N_JUDGED} ratings each, MovieLens-100k ({N_NEW} films held out of training);")
    print("control = HR@10 on the same users' next rating of a trained film (must not drop):")
    print(f"{'collected':>9}  {'variant':38s} {'HR@10':>7} {'nDCG@10':>8} {'recall@200':>10} {'pct rank':>8} "
          f"{'control HR@10':>13}  cases")
    for (n, name), (hr, nd, rec, pct, ctl, m, mc) in results.items():
        print(f"{n:>9}  {name:38s} {hr:7.4f} {nd:8.4f} {rec:10.4f} {pct:8.4f} {ctl:13.4f}  {m} / {mc}")
    took = time.perf_counter() - start
    print(f"took {took:.0f} s")
    from pathlib import Path

    from bench._sections import write_section

    rows = [f"| {n} | {name}{' (**default**)' if name == CHOSEN else ''} | {hr:.4f} | {nd:.4f} | {rec:.4f} | {pct:.4f} | {ctl:.4f} |"
            for (n, name), (hr, nd, rec, pct, ctl, m, mc) in results.items()]
    m, mc = next(iter(results.values()))[5:]
    write_section(Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md", "refresh_items", "\n".join([
        "## New products between training runs (`python -m bench refresh_items`)",
        "",
        f"MovieLens-100k (real data, the real Recommender, {EPOCHS} epochs): {N_NEW} films with at least {MIN_RATINGS} ratings held",
        "out of training, then each \"arrives\" with `provisional_vector` (genre centroid + title neighbours),",
        "collects its first N ratings, and `pocketrank refresh-items` (server/jobs/refresh_items.py) refreshes it.",
        f"Judged on each film's next {N_JUDGED} ratings ({m} cases): the user's earlier trained films pooled, every film",
        "ranked, history excluded; HR@10 and nDCG@10 of the served list (retrieval top 200 reranked by the click",
        "model), recall@200 of retrieval, the film's mean percentile rank by retrieval (0 = top). Control:",
        f"HR@10 of the same users' next rating of a trained film ({mc} cases): it must not fall.",
        "",
        "| N collected | vector | HR@10 | nDCG@10 | recall@200 | pct rank | control HR@10 |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
        "Chosen: the closed form (shrink 2) at a trained film's typical length. Against content-only it",
        "lifts the new films from the bottom third of the ranking into retrieval's top 200 for most of",
        "their next raters, with the control unchanged; it seldom puts them in the top 10 by itself (the",
        "click model, trained on learned vectors, still prefers those). Gradient steps on the item rows with",
        "the towers frozen do no better at the same length; left free they grow the vectors and win the new",
        "films' cases by pushing every other film out of the top 10 (control HR@10 falls about tenfold).",
        f"Longer vectors (1.5x, 2x) trade the control for new-film hits. {took:.0f} s.",
    ]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
