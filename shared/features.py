"""Feature functions that the server and the device both compute.

There is one definition of every feature, here, so training, serving and the
on-device rerank cannot drift apart (no train/serve skew).

The user state is an exponentially decayed, event-type weighted sum of item
vectors, kept as (S, W). The user vector is S / W. Because the update is a
pure fold over events, the real-time updater on the server and the device's
local state produce the same vector for the same event sequence, and training
can compute it in closed form over a whole history.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

# How much each action says about taste. Impressions say nothing on their own
# (the user may not have looked), so they do not move the state.
TYPE_WEIGHTS: Mapping[str, float] = {
    "view": 0.5,
    "click": 1.0,
    "search": 0.7,
    "add_to_cart": 2.0,
    "purchase": 3.0,
    "impression": 0.0,
}
# Per-event decay: the newest event counts most; after ~22 events an old one
# has a tenth of its weight, so the vector follows the current session and a
# click made a moment ago visibly moves the ranking.
DECAY = 0.9


@dataclass(frozen=True)
class UserState:
    s: np.ndarray  # float32 (dim,)
    w: float
    n_events: int = 0

    @classmethod
    def empty(cls, dim: int) -> "UserState":
        return cls(np.zeros(dim, dtype=np.float32), 0.0, 0)


def update_user_state(
    state: UserState, item_vector: np.ndarray | None, event_type: str, decay: float = DECAY
) -> UserState:
    """Fold one event into the user state. Events without a vector only count."""
    weight = TYPE_WEIGHTS.get(event_type, 0.0)
    if item_vector is None or weight == 0.0:
        return UserState(state.s, state.w, state.n_events + 1)
    s = (decay * state.s + weight * np.asarray(item_vector, dtype=np.float32)).astype(np.float32)
    return UserState(s, decay * state.w + weight, state.n_events + 1)


def user_vector(state: UserState, fallback: np.ndarray | None = None) -> np.ndarray:
    """The user's embedding: the weighted mean of the folded item vectors."""
    if state.w <= 1e-9:
        if fallback is not None:
            return np.asarray(fallback, dtype=np.float32)
        return np.zeros_like(state.s)
    return (state.s / state.w).astype(np.float32)


def sequence_weights(event_types: Sequence[str], decay: float = DECAY) -> np.ndarray:
    """Closed-form weights of each event in a history, oldest first.

    update_user_state folded over the same events gives S = sum(w_i * v_i) with
    these w_i, which is what training uses to pool a history in one step.
    """
    n = len(event_types)
    base = np.array([TYPE_WEIGHTS.get(t, 0.0) for t in event_types], dtype=np.float64)
    powers = decay ** np.arange(n - 1, -1, -1, dtype=np.float64)
    return (base * powers).astype(np.float32)


_TOKEN_RE = re.compile(r"[a-z0-9]+")


def tokens(text: str) -> list[str]:
    """Lower-case word tokens; titles and search queries are matched on these."""
    return _TOKEN_RE.findall(text.lower())


def query_vector(
    query: str, titles: Mapping[int, str], vectors: Mapping[int, np.ndarray], max_items: int = 20
) -> np.ndarray | None:
    """A search's vector: the mean vector of items whose title holds every query token.

    Returns None when nothing matches, in which case the search moves no state.
    """
    wanted = set(tokens(query))
    if not wanted:
        return None
    hits = [i for i, t in titles.items() if i in vectors and wanted <= set(tokens(t))]
    if not hits:
        return None
    hits = sorted(hits)[:max_items]
    return np.mean([vectors[i] for i in hits], axis=0).astype(np.float32)


def ranker_inputs(user_vec: np.ndarray, item_vectors: np.ndarray) -> dict[str, np.ndarray]:
    """The ranker's ONNX inputs: one user row and one row per candidate item."""
    return {
        "user": np.asarray(user_vec, dtype=np.float32).reshape(1, -1),
        "items": np.ascontiguousarray(item_vectors, dtype=np.float32),
    }


def fold_events(
    events: Iterable[tuple[str, np.ndarray | None]], dim: int, decay: float = DECAY
) -> UserState:
    """Fold a whole (event_type, item_vector) sequence, oldest first."""
    state = UserState.empty(dim)
    for etype, vec in events:
        state = update_user_state(state, vec, etype, decay)
    return state
