"""pocketrank.server.training.evaluate.retrieve_and_rank: the user's history never comes back as a candidate."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pocketrank.server.training.evaluate import pooled_user, retrieve_and_rank
from pocketrank.server.training.model import ModelConfig, Recommender


@pytest.mark.parametrize("n_items", [40, 200, 500])
def test_history_is_excluded_whatever_the_catalogue_size(n_items):
    torch.manual_seed(0)
    model = Recommender(ModelConfig(n_items=n_items, dim=8, hidden=16)).eval()
    vecs = model.item_vectors().detach().numpy()
    history = np.array([3, 7, 7, 11, 19], dtype=np.int64)  # a repeat, as real histories have
    uv = pooled_user(vecs, history, model.config.history)
    top, reranked = retrieve_and_rank(model, vecs, uv, history, n_candidates=200)
    assert not set(top.tolist()) & set(history.tolist())
    assert sorted(reranked.tolist()) == sorted(top.tolist())
    # every other item is a candidate when the catalogue is no larger than n_candidates + history
    assert len(top) == min(200, n_items - np.unique(history).size)
