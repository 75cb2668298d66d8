import numpy as np
import pytest

from pocketrank.shared.features import (
    DECAY,
    TYPE_WEIGHTS,
    UserState,
    fold_events,
    query_vector,
    sequence_weights,
    update_user_state,
    user_vector,
)


def test_fold_matches_the_closed_form_training_uses():
    rng = np.random.default_rng(1)
    types = ["click", "view", "purchase", "click", "add_to_cart"]
    vecs = rng.normal(size=(len(types), 6)).astype(np.float32)
    state = fold_events(zip(types, vecs), 6)
    w = sequence_weights(types)
    assert state.w == pytest.approx(w.sum(), rel=1e-6)
    np.testing.assert_allclose(user_vector(state), (w[:, None] * vecs).sum(0) / w.sum(), rtol=1e-5)


def test_hand_computed_two_events():
    s = update_user_state(UserState.empty(2), np.array([1.0, 0.0]), "click")
    s = update_user_state(s, np.array([0.0, 1.0]), "purchase")
    # S = 0.9 * 1 * [1, 0] + 3 * [0, 1]; W = 0.9 + 3
    assert DECAY == 0.9 and TYPE_WEIGHTS["purchase"] == 3.0
    np.testing.assert_allclose(user_vector(s), [0.9 / 3.9, 3 / 3.9], rtol=1e-6)
    assert s.n_events == 2


def test_impressions_and_unknown_items_count_but_do_not_move_the_state():
    s = update_user_state(UserState.empty(2), np.array([1.0, 0.0]), "click")
    for etype, vec in (("impression", np.array([0.0, 1.0])), ("click", None)):
        s2 = update_user_state(s, vec, etype)
        assert s2.n_events == s.n_events + 1 and np.array_equal(s2.s, s.s)


def test_empty_state_uses_the_fallback():
    assert user_vector(UserState.empty(3), fallback=np.ones(3)).tolist() == [1, 1, 1]
    assert user_vector(UserState.empty(3)).tolist() == [0, 0, 0]


def test_query_vector_matches_every_token():
    titles = {1: "Red Running Shoes", 2: "Blue Shoes", 3: "Red Hat"}
    vectors = {1: np.array([1.0, 0.0]), 2: np.array([0.0, 1.0]), 3: np.array([1.0, 1.0])}
    assert query_vector("red shoes", titles, vectors).tolist() == [1.0, 0.0]
    assert query_vector("shoes", titles, vectors).tolist() == [0.5, 0.5]
    assert query_vector("sofa", titles, vectors) is None
    assert query_vector("!!!", titles, vectors) is None


def test_impressions_in_a_history_are_not_a_decay_step():
    rng = np.random.default_rng(2)
    types = ["click", "impression", "view", "impression", "impression", "purchase"]
    vecs = rng.normal(size=(len(types), 4)).astype(np.float32)
    state = fold_events(zip(types, vecs), 4)
    w = sequence_weights(types)
    assert w[1] == w[3] == w[4] == 0
    np.testing.assert_allclose(user_vector(state), (w[:, None] * vecs).sum(0) / w.sum(), rtol=1e-5)
