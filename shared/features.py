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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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
    def empty(cls, dim: int) -> UserState:
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
    Zero-weight events (impressions) are not a decay step, as in the fold; the
    history is assumed to have a vector for every event.
    """
    base = np.array([TYPE_WEIGHTS.get(t, 0.0) for t in event_types], dtype=np.float64)
    steps = (base > 0).astype(np.int64)
    # Steps taken after event i = number of weighted events after it.
    later = np.concatenate([np.cumsum(steps[::-1])[::-1][1:], [0]]) if len(steps) else steps
    return (base * decay ** later.astype(np.float64)).astype(np.float32)


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


# --- historical features: per-user aggregates over time windows ---

WINDOW_DAYS = (1, 7, 30)
_DAY = 86_400.0
_COUNTED = ("view", "click", "search", "add_to_cart", "purchase", "impression")


def window_aggregates(
    events: Iterable[tuple[float, str, str | None, float]], as_of: float, windows: Sequence[int] = WINDOW_DAYS
) -> dict[str, dict]:
    """A user's aggregates over the last 1, 7 and 30 days before `as_of`.

    `events` are (timestamp, type, item category or None, item price). Events at
    or after `as_of` are left out, so training can compute the features as of
    each example's time without seeing its future. Per window: counts by type,
    click-through rate (clicks / impressions, None without impressions), spend
    (sum of purchased prices), and category interest (TYPE_WEIGHTS summed per
    category, the same weights the user vector uses).
    """
    out: dict[str, dict[str, Any]] = {f"{d}d": {"counts": dict.fromkeys(_COUNTED, 0), "spend": 0.0, "categories": {}} for d in windows}
    spans = [(f"{d}d", d * _DAY) for d in windows]
    for ts, etype, category, price in events:
        age = as_of - ts
        if age <= 0:
            continue
        weight = TYPE_WEIGHTS.get(etype, 0.0)
        for key, span in spans:
            if age > span:
                continue
            w = out[key]
            if etype in w["counts"]:
                w["counts"][etype] += 1
            if etype == "purchase":
                w["spend"] += float(price)
            if category and weight:
                w["categories"][category] = w["categories"].get(category, 0.0) + weight
    for w in out.values():
        c = w["counts"]
        w["ctr"] = c["click"] / c["impression"] if c["impression"] else None
        w["spend"] = round(w["spend"], 2)
    return out


def category_shares(aggregates: Mapping[str, dict] | None, window: str = "7d") -> dict[str, float]:
    """Each category's share of the user's weighted interest in `window` (sums to 1, or empty)."""
    cats = ((aggregates or {}).get(window) or {}).get("categories") or {}
    total = sum(cats.values())
    return {c: v / total for c, v in cats.items()} if total > 0 else {}
