"""One Optuna study for the sequence model, on a validation carve of the training data only.

The data `pocketrank train` learns from (every user's history without the
held-out products) is carved once more: each user's newest training product
is the study's validation target, the rest is what each trial trains on. The
test products never enter it. Each trial trains with early stopping and
reports its validation nDCG@10 as it goes, so a median pruner stops trials
that trail; the best trial's settings are what the real training then uses,
and they are stored with the model (config.json) and printed by `train`.

The width (dim 64) and the history length (50 events) are not searched: they
are the wire's vector size and the device's speed budget. What the user fixed
(`train --tune N --lr 3e-3 --epochs 16 --lr-schedule linear`) is not searched
either: every trial runs with it, so the study chooses the rest for the
recipe that will actually train.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pocketrank.shared.errors import ModelError

from .seqmodel import SeqConfig
from .seqtrain import Histories, fit

SEARCHED = ("dropout", "id_dropout", "lr", "layers", "heads", "weight_decay", "batch_size")


def suggest(trial, fixed: dict | None = None) -> dict:
    """The trial's values of the SEARCHED settings not in `fixed`; heads divide the width (a fixed one too)."""
    fixed = fixed or {}
    dim = int(fixed.get("dim", SeqConfig.dim))
    space = {
        "dropout": lambda: trial.suggest_float("dropout", 0.1, 0.6),
        "id_dropout": lambda: trial.suggest_float("id_dropout", 0.0, 0.4),
        "lr": lambda: trial.suggest_float("lr", 3e-4, 5e-3, log=True),
        "layers": lambda: trial.suggest_int("layers", 1, 3),
        "heads": lambda: trial.suggest_categorical("heads", [h for h in (1, 2, 4) if dim % h == 0]),
        "weight_decay": lambda: trial.suggest_float("weight_decay", 1e-6, 1e-1, log=True),
        "batch_size": lambda: trial.suggest_categorical("batch_size", [64, 128, 256]),
    }
    return {k: draw() for k, draw in space.items() if k not in fixed}


def tune(train: Histories, n_items: int, tokens: np.ndarray | None, n_tokens: int, n_trials: int,
         seed: int = 42, max_epochs: int = 60, log: Callable[[str], None] | None = None,
         fixed: dict | None = None) -> dict:
    """Best settings (the SEARCHED keys not in `fixed`) and a summary of the study; ModelError if the data cannot
    be carved. `fixed`: SeqConfig settings every trial uses and the study leaves alone ("epochs" caps a trial
    in place of `max_epochs`)."""
    fixed = dict(fixed or {})
    try:
        import optuna
    except ImportError as exc:  # the server extra installs it; a bare edge install does not
        raise ModelError("tuning needs optuna: pip install 'pocketrank[server]'") from exc

    inner = train.head(1)
    target = np.array([r[-1] if len(r) >= 2 else -1 for r in train.rows], dtype=np.int64)
    if (target >= 0).sum() < 10:
        raise ModelError("too few users with two training products to carve a validation split for tuning")

    def objective(trial) -> float:
        settings = suggest(trial, fixed)
        c = SeqConfig(n_items=n_items, n_tokens=n_tokens, seed=seed, **{"epochs": max_epochs, **fixed, **settings})

        def report(row: dict) -> None:
            if "val_nDCG@10" in row:
                trial.report(row["val_nDCG@10"], row["epoch"])
                if trial.should_prune():
                    raise optuna.TrialPruned()

        r = fit(inner, c, tokens, val=(inner, target), progress=False, log=report)
        best = max(row.get("val_nDCG@10", 0.0) for row in r.history)
        trial.set_user_attr("best_epoch", r.best_epoch)
        if log:
            log(f"trial {trial.number}: val nDCG@10 {best:.4f} at epoch {r.best_epoch} with {settings}")
        return best

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=6))
    study.optimize(objective, n_trials=n_trials)
    best = study.best_trial
    return {"settings": dict(best.params), "val_nDCG@10": best.value, "trials": len(study.trials),
            "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials),
            "best_epoch": best.user_attrs.get("best_epoch"), "fixed": fixed,
            "protocol": "each user's newest training product as the validation target; test products unseen"}
