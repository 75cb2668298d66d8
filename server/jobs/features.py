"""The historical-features batch job: per-user window aggregates, item exposures, segment vectors.

Run it on a schedule (`pocketrank features`, say hourly). It reads the event
log, computes every active user's 1/7/30-day aggregates with
pocketrank.shared.features.window_aggregates (the one definition training uses too),
resets each item's exposure count to its impressions over the last day, and,
given user profiles, recomputes the segment vectors cold-start users get.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import cast

import numpy as np

from pocketrank.shared.features import WINDOW_DAYS, user_vector, window_aggregates

from ..online import segments as seg
from ..stores.base import Store, UserRecord

DAY = 86_400.0


def latest_timestamp(store: Store) -> float:
    """The newest event's timestamp (features "as of" a replayed log's end, e.g. MovieLens)."""
    last = 0.0
    for entry in store.iter_log():
        last = max(last, entry.event.timestamp)
    return last


def features_job(store: Store, as_of: float | None = None, profiles: Mapping[str, Mapping[str, str]] | None = None,
                 min_segment_users: int = 5, dim: int = 64,
                 user_vector_of: Callable[[UserRecord], np.ndarray | None] | None = None) -> dict:
    """Window aggregates, exposures and segment vectors. `user_vector_of`: how a user record becomes the
    model's user vector (pocketrank.server.online.encoding.record_vector_fn for a sequence model); None: its state's."""
    as_of = time.time() if as_of is None else as_of
    since = as_of - max(WINDOW_DAYS) * DAY
    items = {it.item_id: it for it in store.items()}
    per_user: dict[str, list[tuple]] = {}
    shown: Counter[int] = Counter()
    for entry in store.iter_log():
        ev = entry.event
        if not since <= ev.timestamp < as_of:
            continue
        item = cast("int | None", ev.item_id)  # logged events carry the catalogue index, not the product id
        it = items.get(item) if item is not None else None
        per_user.setdefault(ev.user_id, []).append(
            (ev.timestamp, ev.type, it.category if it else None, it.price if it else 0.0))
        if ev.type == "impression" and item is not None and as_of - ev.timestamp <= DAY:
            shown[item] += 1
    features = {u: window_aggregates(evs, as_of) for u, evs in per_user.items()}
    store.put_features(features)
    store.set_exposures(dict(shown))
    n_segments = 0
    if profiles:
        records = store.user_records(list(profiles), dim)
        if user_vector_of is None:
            vectors = {u: user_vector(r.state) for u, r in records.items() if r.state.w > 0}
        else:
            vectors = {u: v for u, v in ((u, user_vector_of(r)) for u, r in records.items()) if v is not None}
        segments = seg.compute_segments(vectors, profiles, min_segment_users)
        store.set_meta(seg.META_KEY, seg.dumps(segments))
        lists = seg.popular_lists({u: store.consumed_items(u) for u in profiles}, profiles, min_segment_users)
        store.set_meta(seg.POPULAR_KEY, seg.dumps_popular(lists))
        n_segments = len(segments)
    store.set_meta("features_as_of", repr(as_of))
    return {"as_of": as_of, "users": len(features), "items_shown": len(shown), "segments": n_segments,
            "events": int(sum(len(v) for v in per_user.values()))}


__all__ = ["features_job", "latest_timestamp"]
