"""The sequence encoder's input, built the same way by training, the server and the device.

A history is the user's events oldest first. What enters the encoder: events
of the product-choosing types with a vector for their product; a run of
events on one product (a view, then a click, then a purchase) counts once,
with the type and time of its last event, as training saw it; at most the
newest `max_len`. Each kept event is its product's vector, its type code
(EVENT_TYPES' index + 1; 0 is padding) and the bucket of the time since the
kept event before it (1 for the first).

Searches do not enter it yet: the server's recent-event rows keep no query
text, so a search could not be entered the same way on both sides.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from .schemas import EVENT_TYPES

SEQUENCE_TYPES = frozenset({"view", "click", "add_to_cart", "purchase"})
TYPE_INPUT = {t: k + 1 for k, t in enumerate(EVENT_TYPES)}  # 0 = padding
N_TYPE_INPUTS = 8
N_GAPS = 40  # 0 padding, 1 first event, 2 + floor(log2(1 + seconds)) up to N_GAPS - 1


def gap_buckets(times: Sequence[float] | np.ndarray) -> np.ndarray:
    """Bucket of the time since the previous event, per event (oldest first); the first event's is 1."""
    t = np.asarray(times, dtype=np.float64)
    out = np.ones(len(t), dtype=np.int64)
    if len(t) > 1:
        gap = np.clip(np.diff(t), 0, 1e12)
        out[1:] = 2 + np.minimum(np.floor(np.log2(1.0 + gap)), N_GAPS - 3).astype(np.int64)
    return out


def kept_events(events: Iterable[tuple[str, object, float]]) -> list[int]:
    """Positions of the events that enter the encoder, from (type, product key or None, timestamp) oldest
    first, where the key is None when the product has no vector here. Runs on one product keep their last."""
    kept: list[int] = []
    last_key: object = None
    for k, (etype, key, _ts) in enumerate(events):
        if etype not in SEQUENCE_TYPES or key is None:
            continue
        if kept and key == last_key:
            kept[-1] = k  # the same product again: one entry, the newest event's type and time
        else:
            kept.append(k)
        last_key = key
    return kept


def encoder_feed(events: Sequence[tuple[str, object, float]], vectors: Sequence[np.ndarray | None],
                 max_len: int, dim: int) -> dict[str, np.ndarray] | None:
    """The encoder's ONNX feed for one user: items (1, L, dim) float32, types (1, L) and gaps (1, L) int64.

    `events` are (type, product key, timestamp) oldest first and `vectors[k]` is event k's product vector
    (None: the product is unknown here, so the event is left out). None when nothing enters the encoder
    (the caller falls back as for a user without history).
    """
    keyed = [(t, key if vec is not None else None, ts) for (t, key, ts), vec in zip(events, vectors)]
    kept = kept_events(keyed)
    if not kept:
        return None
    # Gaps are measured between kept events over the whole kept history, then the newest max_len are taken,
    # so the first kept event of a long history still carries its real gap, as in training's windows.
    times = [keyed[k][2] for k in kept]
    gaps = gap_buckets(times)[-max_len:]
    kept = kept[-max_len:]
    items = np.zeros((1, len(kept), dim), dtype=np.float32)
    for j, k in enumerate(kept):
        items[0, j] = np.asarray(vectors[k], dtype=np.float32)
    types = np.array([[TYPE_INPUT[keyed[k][0]] for k in kept]], dtype=np.int64)
    return {"items": items, "types": types, "gaps": gaps.reshape(1, -1)}
