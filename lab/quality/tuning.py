"""How lab.quality.defaults.DEFAULTS were chosen: the Optuna study and the hand grids, on
validation splits carved from training data (test never looked at); `python -m lab.quality.tuning`.
"""

from __future__ import annotations

from pocketrank.server.training.ranking_metrics import ndcg_at_k

from .defaults import DEFAULTS


def tune_protocol1(trials: int = 50, seed: int = 0) -> dict:
    """Optuna TPE on protocol 1's validation split (a split of its training rows only)."""
    import numpy as np
    import optuna

    from . import beyond
    from .data import movielens_100k
    from .hybrid import LinearHybrid
    from .peers import binary_matrix
    from .splits import python_stratified_split

    d = movielens_100k()
    tr = np.flatnonzero(python_stratified_split(d.users, d.items, 0.75, "item", 42))
    folds = []  # two validation carves of the training rows, to halve the selection noise
    for vseed in (7, 8):
        v = python_stratified_split(d.users[tr], d.items[tr], 0.75, "item", vseed)
        X = binary_matrix(d.users[tr[v]], d.items[tr[v]], d.n_users, d.n_items)
        Y = binary_matrix(d.users[tr[~v]], d.items[tr[~v]], d.n_users, d.n_items)
        folds.append((X, Y, np.asarray(X.sum(0)).ravel()))
    users = np.arange(d.n_users)

    def objective(trial):
        lam = trial.suggest_float("lam", 50, 2000, log=True)
        p = trial.suggest_float("p", 0.05, 0.95)
        w_user = trial.suggest_float("w_user", 0.0, 0.6)
        user_lam = trial.suggest_float("user_lam", 50, 3000, log=True)
        knob = trial.suggest_float("mmr_knob", 0.0, 0.5)
        nd, pr = [], []
        for X, Y, counts in folds:
            m = LinearHybrid(lam, p, w_user, user_lam)
            s = m.fit(X).scores(users)
            s[X.nonzero()] = -np.inf
            top = beyond.mmr(s, m.B.T, 10, knob, pool=50, counts=counts, exposure=knob * 0.5) if knob > 0.02 \
                else beyond.top_k(s, 10)
            acc = beyond.accuracy(top, Y, 10)
            nd.append(acc["nDCG@10"])
            pr.append(acc["P@10"])
        trial.set_user_attr("P@10", float(np.mean(pr)))
        return float(np.mean(nd))

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.enqueue_trial({"lam": 300.0, "p": 0.5, "w_user": 0.0, "user_lam": 300.0, "mmr_knob": 0.0})
    study.optimize(objective, n_trials=trials)
    return {"best": study.best_params, "val_nDCG@10": study.best_value,
            "val_P@10": study.best_trial.user_attrs["P@10"]}


def stacking_examples(carve_seeds=(7, 8, 9), seed: int = 0) -> dict:
    """Per carve of protocol 1's training rows: the ranker's (features, labels, candidates, held matrix)."""
    import numpy as np

    from . import stacking as st
    from .data import movielens_100k
    from .splits import python_stratified_split

    d = movielens_100k()
    tr = np.flatnonzero(python_stratified_split(d.users, d.items, 0.75, "item", 42))  # test rows never enter
    G, Y = st.item_side(d.item_text, d.item_ids)
    out = {}
    for s in carve_seeds:
        part = st.carve(d.users[tr], d.items[tr], s)
        base = st.BaseModels(DEFAULTS["p1"], DEFAULTS["ease_lambda"], DEFAULTS["als"], seed=seed,
                             n_candidates=DEFAULTS["p1_candidates"])
        out[s] = st.examples(d.users[tr], d.items[tr], d.timestamps[tr], part, d.n_users, d.n_items, base, G, Y)
    return out


def tune_stacking(grid: list[dict] | None = None, carve_seeds=(7, 8, 9), ranker_seeds=(0, 1, 2)) -> dict:
    """Leave-one-carve-out over three carves of the training rows: train the ranker on two, score the third.

    Returns the hybrid's own top 10 (the candidate order) and each ranker configuration's mean
    validation nDCG@10 / P@10 over the three held carves and the ranker seeds.
    """
    import itertools

    import numpy as np
    import torch

    from . import beyond, stacking as st

    torch.set_num_threads(1)
    ex = stacking_examples(carve_seeds)
    base = [beyond.accuracy(ex[s][2][:, :10], ex[s][3], 10) for s in carve_seeds]
    out = {"hybrid": {m: float(np.mean([b[m] for b in base])) for m in ("nDCG@10", "P@10")}, "ranker": []}
    for cfg in grid or [dict(DEFAULTS["p1_ranker"])]:
        acc = []
        for held, seed in itertools.product(carve_seeds, ranker_seeds):
            rest = [s for s in carve_seeds if s != held]
            r = st.Ranker(st.RankerConfig(**cfg, seed=seed)).fit(np.concatenate([ex[s][0] for s in rest]),
                                                                 np.concatenate([ex[s][1] for s in rest]))
            acc.append(beyond.accuracy(st.rerank_top(ex[held][2], r.score(ex[held][0])), ex[held][3], 10))
        out["ranker"].append({"config": cfg, **{m: float(np.mean([a[m] for a in acc])) for m in ("nDCG@10", "P@10")}})
    return out


def tune_protocol2(seed: int = 42) -> dict:
    """Early-stop the tower on the one-before-last item; then pick the DLAE blend weight there."""
    import numpy as np
    import torch

    from .data import movielens_100k, time_sorted_sequences
    from .hybrid import DLAE, zscore
    from .peers import binary_matrix
    from .seqrec import SeqConfig, fit, score
    from .splits import protocol2_split

    torch.set_num_threads(1)
    d = movielens_100k()
    train, val, _test = protocol2_split(time_sorted_sequences(d))  # the test item is never used here
    users = np.flatnonzero(val >= 0)
    kw = dict(DEFAULTS["seq"], epochs=40)
    tower, report = fit(train, SeqConfig(n_items=d.n_items, seed=seed, **kw), ([train[u] for u in users], val[users]))
    hu = np.concatenate([np.full(len(s), u) for u, s in enumerate(train)])
    X = binary_matrix(hu, np.concatenate(train), d.n_users, d.n_items)
    s_seq = zscore(score(tower, [train[u] for u in users]))
    s_lin = zscore(DLAE(DEFAULTS["dlae_lambda"], DEFAULTS["dlae_p"]).fit(X).scores(users))
    out = {"best_epoch": report["best_epoch"], "val_nDCG@10 (tower)": report["best_val_nDCG@10"], "blend": {}}
    for w in (0.0, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0):
        s = s_seq + w * s_lin
        r, c = X[users].nonzero()
        s[r, c] = -np.inf
        top = np.argsort(-s, axis=1)[:, :10]
        match = top == val[users][:, None]
        hit = match.any(1)
        out["blend"][w] = {"HR@10": float(hit.mean()),
                           "nDCG@10": float(np.mean([ndcg_at_k(t.tolist(), {y}, 10)
                                                     for t, y in zip(top, val[users].tolist())]))}
    return out


def tune_new_items(seeds=(0, 1, 2), rng_seeds=(99, 98), betas=(0.0, 0.25, 0.5, 1.0, 2.0)) -> dict:
    """Beta, the weight of the content-predicted popularity in the "ridge to item vectors" row, on the
    pseudo-new items of `_new_items_carve` (6 carves): mean val nDCG@10 of that row."""
    import numpy as np
    import torch

    from . import protocols
    from .data import movielens_100k

    torch.set_num_threads(1)
    d = movielens_100k()
    carves = [(s, *_new_items_carve(d, s, r)) for s in seeds for r in rng_seeds]
    row = "content-only, ridge to item vectors (before)"
    return {beta: round(float(np.mean([protocols.new_items(sub, s, beta=beta, new=pseudo)[row]["nDCG@10"]
                                       for s, sub, pseudo in carves])), 4) for beta in betas}


def _new_items_carve(d, seed: int, rng_seed: int = 99):
    """A validation carve for new items: every benchmark seed's new items dropped (their union, so no
    seed's test items are ever seen), 10% of the remaining items drawn as pseudo-new. `seed` (the
    model seed the carve is scored with) and `rng_seed` together pick the draw."""
    import numpy as np

    from .splits import benchmark_held_out

    bench_new = benchmark_held_out(d.n_items, "items")
    rng = np.random.default_rng((rng_seed, seed))
    warm = np.flatnonzero(~bench_new)
    pseudo = np.zeros(d.n_items, dtype=bool)
    pseudo[rng.choice(warm, size=len(warm) // 10, replace=False)] = True
    return d.subset(~bench_new[d.items]), pseudo


def tune_new_items_rank(seeds=(0, 1, 2), rng_seeds=(99, 98), lams=(100.0, 300.0, 1000.0, 3000.0),
                        blends=(0.25, 0.5, 1.0), biases=(0.0, 1.0), titles=(0.05, 0.1, 0.25),
                        weights=(0.5,), alphas=(None,)) -> dict:
    """Grid the ranking content map's lam, its blend with the ContentMap vector (whose ridge strength is
    `alphas`; None = the default), its bias, the title-token weight and the content-profile weight on
    pseudo-new items: mean val nDCG@10 over 6 carves (`_new_items_carve`: model seeds 0, 1, 2 x two
    draws of pseudo-new items; ~120 items per carve, so one carve is noisy)."""
    import numpy as np
    import torch
    from tqdm import tqdm

    from . import protocols
    from .data import movielens_100k

    torch.set_num_threads(1)
    d = movielens_100k()
    carves = [(s, *_new_items_carve(d, s, r)) for s in seeds for r in rng_seeds]
    out: dict = {"ridge to item vectors (before)": [], "rank": {}, "rank + profile": {}}
    grid = [(t, lam, a, b, w, al) for al in alphas for t in titles for lam in lams for a in blends for b in biases
            for w in weights]
    for t, lam, a, b, w, al in tqdm(grid, desc="new items grid"):
        runs = [protocols.new_items(sub, s, beta=DEFAULTS["content_pop_weight"], new=pseudo, rank_lam=lam,
                                    profile_weight=w, blend=a, bias_weight=b, title_weight=t, alpha=al)
                for s, sub, pseudo in carves]
        name = f"title {t:g}, lam {lam:g}, blend {a:g}, bias {b:g}" + (f", alpha {al:g}" if al is not None else "")
        if w == weights[0]:
            out["rank"][name] = round(float(np.mean(
                [r["pocketrank content-only"]["nDCG@10"] for r in runs])), 4)
            if al is None and not out["ridge to item vectors (before)"]:
                out["ridge to item vectors (before)"] = round(float(np.mean(
                    [r["content-only, ridge to item vectors (before)"]["nDCG@10"] for r in runs])), 4)
        out["rank + profile"][f"{name}, w {w:g}"] = round(float(np.mean(
            [r["pocketrank content-only + content profile"]["nDCG@10"] for r in runs])), 4)
    return out


def cold_user_carve(n_users: int, vseed: int):
    """(pseudo-cold, warm) user masks for one validation draw: every benchmark seed's cold users (their
    union) are in neither, so they are never fitted on nor validated on."""
    from .splits import benchmark_held_out, held_out

    bench_cold = benchmark_held_out(n_users, "users")
    cold = held_out(n_users, 0.1, seed=vseed) & ~bench_cold
    return cold, ~cold & ~bench_cold


def tune_cold_users(val_seeds=(51, 52, 53), lams=(3.0, 10.0, 30.0, 100.0, 300.0),
                    segment_ms=(500.0, 1000.0, 2000.0, 5000.0, 10000.0, 20000.0)) -> dict:
    """Warm users held out as pseudo-cold (`cold_user_carve`: no benchmark seed's cold user is seen);
    grid the segment prior's m and the demographic ridge's lam, field set (with/without the zip
    region) and crosses, beside popularity."""
    import numpy as np

    from . import beyond
    from .data import movielens_100k
    from .demographic import DemographicRidge, movielens_regions
    from .hybrid import SegmentPrior
    from .peers import binary_matrix

    d = movielens_100k()
    regions = movielens_regions()
    profile = [dict(d.user_features.get(str(u), {}), region=regions.get(str(u), "x")) for u in d.user_ids]
    field_sets = {"g,a,o": ("gender", "age_band", "occupation"), "g,a,o,region": ("gender", "age_band",
                  "occupation", "region"), "g,a": ("gender", "age_band")}
    scores: dict[str, list[float]] = {}
    for vseed in val_seeds:
        cold, warm = cold_user_carve(d.n_users, vseed)
        X = binary_matrix(d.users[warm[d.users]], d.items[warm[d.users]], d.n_users, d.n_items)
        T = binary_matrix(d.users[cold[d.users]], d.items[cold[d.users]], d.n_users, d.n_items)
        cu, wu = np.flatnonzero(cold), np.flatnonzero(warm)

        def nd(S):
            return beyond.accuracy(beyond.top_k(S, 10), T[cu], 10)["nDCG@10"]

        scores.setdefault("popularity", []).append(nd(np.tile(np.asarray(X.sum(0)).ravel(), (len(cu), 1))))
        seg = SegmentPrior().fit(d.users[warm[d.users]], d.items[warm[d.users]], d.user_ids, d.user_features,
                                 d.n_items)
        for m in segment_ms:  # m is read at scoring time, so one fit serves the whole grid
            seg.m = m
            scores.setdefault(f"segment prior, m {m:g}", []).append(
                nd(np.stack([seg.scores_for(profile[u]) for u in cu])))
        for name, fields in field_sets.items():
            for crosses in (False, True):
                for lam in lams:
                    m = DemographicRidge(lam, fields, crosses).fit([profile[u] for u in wu], X[wu])
                    key = f"ridge {name}{' x crosses' if crosses else ''}, lam {lam:g}"
                    scores.setdefault(key, []).append(nd(m.scores([profile[u] for u in cu])))
    return {k: round(float(np.mean(v)), 4) for k, v in sorted(scores.items(), key=lambda kv: -np.mean(kv[1]))}


if __name__ == "__main__":  # python -m lab.quality.tuning
    import json
    import os

    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    import sys

    which = sys.argv[1] if len(sys.argv) > 1 else "protocol1"
    fn = {"protocol1": tune_protocol1, "protocol2": tune_protocol2, "new_items": tune_new_items,
          "new_items_rank": tune_new_items_rank, "cold_users": tune_cold_users, "stacking": tune_stacking}[which]
    print(json.dumps(fn(), indent=2))
