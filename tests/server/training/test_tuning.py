"""The sequence model's Optuna study: what it searches, and what the user fixed that it leaves alone."""

from __future__ import annotations

import numpy as np
import pytest

from pocketrank.server.training.seqtrain import Histories
from pocketrank.server.training.tuning import SEARCHED, tune
from pocketrank.shared.errors import ModelError

pytest.importorskip("optuna")


def _histories(n_users: int = 60, n_items: int = 24, length: int = 8, seed: int = 0) -> Histories:
    """Each user walks through one of four blocks of products: a next product a model can learn."""
    rng = np.random.default_rng(seed)
    rows, types, times = [], [], []
    for u in range(n_users):
        block = (u % 4) * (n_items // 4)
        rows.append(block + (rng.integers(0, n_items // 4) + np.arange(length)) % (n_items // 4))
        types.append(np.ones(length, np.int8))
        times.append(np.arange(length, dtype=np.float64) * 60.0)
    return Histories(rows, types, times)


def test_the_study_searches_what_is_not_fixed_and_trials_run_the_fixed_budget():
    fixed = {"lr": 3e-3, "lr_schedule": "linear", "epochs": 1, "dim": 16}
    out = tune(_histories(), 24, None, 0, n_trials=2, seed=3, fixed=fixed)
    assert set(out["settings"]) == set(SEARCHED) - {"lr"}  # nothing fixed comes back as a choice
    assert out["fixed"] == fixed and out["trials"] == 2
    assert out["best_epoch"] == 1  # the fixed budget of 1 epoch, not the study's 60 at most
    assert 0.0 <= out["val_nDCG@10"] <= 1.0


def test_without_fixed_settings_every_searched_setting_is_chosen():
    out = tune(_histories(), 24, None, 0, n_trials=1, seed=3, max_epochs=2)
    assert set(out["settings"]) == set(SEARCHED) and out["fixed"] == {}


def test_too_few_users_to_carve_is_a_model_error():
    with pytest.raises(ModelError, match="too few users"):
        tune(_histories(n_users=5), 24, None, 0, n_trials=1)
