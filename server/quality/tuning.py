"""Tuned defaults, and how each was chosen (validation splits only; test never looked at).

Protocol 1's hybrid comes from an Optuna TPE study (`tune_protocol1`, below); the
rest from small grids run by hand on validation splits carved from training data:
- protocol 1 (EASE peer lambda; DLAE lambda in {50..800} x p in {0.1..0.7}; ALS and
  implicit BPR, a handful of configurations each): validation = a second
  stratified-per-item 75/25 split (seed 7) of the protocol-1 training rows;
- sequence tower: early stopping on validation nDCG@10, validation = each
  user's one-before-last item with the last item unseen; the best epoch (24)
  becomes `epochs` for the refit on all but the last item;
- protocol 2's blend weight of DLAE beside the tower: a grid on the same
  one-before-last validation item (`tune_protocol2`);
- segment prior shrinkage m in {500..20000}: validation = 10% of the training
  users held out (seeds 51, 52), disjoint from the benchmark's cold users' seeds.
Still by hand: an Optuna study over the tower (dim, layers, dropout, lr, max_len)
is the next step; it should write its choice here and beside the model.
"""

from __future__ import annotations

DEFAULTS: dict = {
    "ease_lambda": 400.0,  # EASE peer at its best on the protocol-1 validation split
    "als": {"factors": 32, "regularization": 0.1, "alpha": 1.0, "iterations": 15},
    "bpr": {"factors": 64, "learning_rate": 0.05, "regularization": 0.01, "iterations": 200},
    # DLAE alone (the BYO-data model's linear half): the hand grid's validation best
    "dlae_lambda": 500.0,
    "dlae_p": 0.5,
    # protocol 1's hybrid: `python -m server.quality.tuning` (Optuna TPE, 50 trials, seed 0,
    # mean validation nDCG@10 over two carves 0.2751; on the seed-7 carve alone DLAE (500, 0.5) had 0.2738)
    "p1": {"lam": 274.49, "p": 0.8699, "w_user": 0.4361, "user_lam": 1047.0, "mmr_knob": 0.0548},
    "seq": {"dim": 64, "layers": 2, "heads": 2, "max_len": 50, "dropout": 0.3, "lr": 2e-3, "epochs": 24},
    # protocol 2's hybrid: z(tower) + w * z(DLAE); `tune_protocol2` on the one-before-last item:
    # w = 0 -> val nDCG@10 0.1092, 0.1 -> 0.1161, 0.2 -> 0.1164 (best), 0.35 -> 0.1146, 1.0 -> 0.0951
    "p2_linear_weight": 0.2,
    "seq_p3": {"dim": 64, "layers": 2, "heads": 2, "max_len": 50, "dropout": 0.3, "lr": 2e-3, "epochs": 20},
    "segment_m": 5000.0,
    # ridge strength of the content map; pseudo-new warm items (as `tune_new_items`), seeds 0 and 1:
    # alpha 0.3 -> mean val nDCG@10 0.224, 3 -> 0.247, 30 -> 0.257 (chosen), 100 -> 0.258 (seed-split)
    "content_alpha": 30.0,
    # weight of the content-predicted popularity beside <user, content vector> for new items:
    # `tune_new_items` (pseudo-new items carved from seed 0's warm items; alpha 3):
    # beta 0 -> 0.2460, 0.25 -> 0.2465 (chosen), 0.5 -> 0.2417, 1 -> 0.2279, 4 -> 0.1988
    "content_pop_weight": 0.25,
}


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


def tune_protocol2(seed: int = 42) -> dict:
    """Early-stop the tower on the one-before-last item; then pick the DLAE blend weight there."""
    import numpy as np
    import torch

    from .data import movielens_100k, time_sorted_sequences
    from .hybrid import DLAE, zscore
    from .peers import binary_matrix
    from .seqrec import SeqConfig, fit, score
    from .splits import leave_last_out

    torch.set_num_threads(1)
    d = movielens_100k()
    train, val, _test = leave_last_out(time_sorted_sequences(d))  # the test item is never used here
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
                           "nDCG@10": float(np.where(hit, 1 / np.log2(match.argmax(1) + 2), 0).mean())}
    return out


def tune_new_items(seed: int = 0) -> dict:
    """Hold out 10% of the *warm* items of the benchmark's seed-0 split as pseudo-new; grid beta."""
    import numpy as np
    import torch

    from . import protocols
    from .data import movielens_100k
    from .splits import held_out

    torch.set_num_threads(1)
    d = movielens_100k()
    bench_new = held_out(d.n_items, 0.1, seed=2000 + seed)
    rows = ~bench_new[d.items]  # the benchmark's new items are never seen here
    sub = d.subset(rows)
    rng = np.random.default_rng(99)
    warm = np.flatnonzero(~bench_new)
    pseudo = np.zeros(d.n_items, dtype=bool)
    pseudo[rng.choice(warm, size=len(warm) // 10, replace=False)] = True
    return {beta: protocols.new_items(sub, seed, beta=beta, new=pseudo)["pocketrank content-only"]["nDCG@10"]
            for beta in (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)}


if __name__ == "__main__":  # python -m server.quality.tuning
    import json
    import os

    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    import sys

    which = sys.argv[1] if len(sys.argv) > 1 else "protocol1"
    fn = {"protocol1": tune_protocol1, "protocol2": tune_protocol2, "new_items": tune_new_items}[which]
    print(json.dumps(fn(), indent=2))
