"""The retrain's window, hold-out and accuracy gate: pure functions over events, whatever the model.

`pocketrank retrain` (server/jobs/retrain.py, the torch Recommender) and bench/drift (the simulator's
item model) both call `gated_retrain`, so the bench measures the procedure the job runs. The
choices (leave-last-out per user on the newest pick, ranking among the items shown where the log
has impressions, a relative margin) are explained in server/jobs/retrain.py's docstring.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from pocketrank.shared.errors import DataError, ValidationError
from pocketrank.shared.features import TYPE_WEIGHTS
from pocketrank.shared.schemas import Event

from ..training import ranking_metrics as rank

DEFAULT_MARGIN = 0.05
MIN_EVENTS = 3  # distinct items a user must engage with in the window to be held out (two train, one judges)
K = 10
GATED_METRICS = (f"HR@{K}", f"nDCG@{K}")
DAY = 86_400.0


def engaged(e: Event) -> bool:
    return e.item_id is not None and TYPE_WEIGHTS.get(e.type, 0.0) > 0 and e.type != "search"


def in_window(events: Iterable[Event], start: float, end: float) -> list[Event]:
    """Events with start <= timestamp <= end, in timestamp order."""
    return sorted((e for e in events if start <= e.timestamp <= end), key=lambda e: (e.timestamp, e.event_id))


def recency_weights(events: Sequence[Event], end: float, half_life_days: float | None) -> np.ndarray | None:
    """0.5 ** (age / half_life) per event, age in days before `end` (the window's end); None: no weighting.

    An event a half-life old counts half as much in the loss (or is sampled half as often) as one at
    the window's end: after a shift the model follows the new behaviour within a couple of
    half-lives instead of waiting for the window to fill with it, while the window still bounds
    what the job reads and the hold-out still judges it. Events after `end` count as age 0.
    """
    if half_life_days is None:
        return None
    if not half_life_days > 0:
        raise ValidationError("half_life_days", "must be a positive number of days (omit it for no weighting)")
    age = np.maximum(end - np.array([e.timestamp for e in events], dtype=np.float64), 0.0) / DAY
    return 0.5 ** (age / half_life_days)


@dataclass
class Case:
    """One held-out question: given this user's history, is `target` in the top k?"""

    user_id: str
    history: list[int]  # engaged item ids, oldest first
    target: int
    shown: list[int] | None = None  # the items shown in the pick's session, when the log has impressions
    types: list[str] = field(default_factory=list)  # each history item's first engagement: its type and time,
    times: list[float] = field(default_factory=list)  # for models that read them (the sequence encoder)


@dataclass
class Split:
    train: list[Event]
    cases: list[Case]
    held_out_events: int


def hold_out_newest_pick(events: Sequence[Event], min_items: int = MIN_EVENTS) -> Split:
    """Hold out each user's newest pick: the last item they engaged with for the first time.

    A click, cart and purchase of one product are one pick, so all of that user's engagements with
    the held-out item from then on are held out too (with its impressions in that session): a
    purchase must not be "predicted" from the click that preceded it. Users need `min_items`
    distinct engaged items in the window.
    """
    by_user: dict[str, list[Event]] = defaultdict(list)
    for e in events:
        if engaged(e):
            by_user[e.user_id].append(e)
    shown: dict[tuple[str, str], set[int]] = defaultdict(set)
    for e in events:
        if e.type == "impression" and e.item_id is not None and e.session_id:
            shown[(e.user_id, e.session_id)].add(int(e.item_id))
    cases, ids, drop = [], set[str](), set()
    for user, evs in sorted(by_user.items()):
        firsts: dict[int, Event] = {}
        for e in evs:
            firsts.setdefault(int(cast(int, e.item_id)), e)  # engaged() events all name an item
        if len(firsts) < min_items:
            continue
        order = sorted(firsts.values(), key=lambda e: (e.timestamp, e.event_id))
        pick = order[-1]
        seen = shown.get((user, pick.session_id), set())
        cases.append(Case(user, [int(cast(int, e.item_id)) for e in order[:-1]], int(cast(int, pick.item_id)),
                          sorted(seen) if int(cast(int, pick.item_id)) in seen and len(seen) > 1 else None,
                          [e.type for e in order[:-1]], [e.timestamp for e in order[:-1]]))
        ids.update(e.event_id for e in evs if e.item_id == pick.item_id and e.timestamp >= pick.timestamp)
        drop.add((user, pick.session_id, pick.item_id))
    train = [e for e in events if e.event_id not in ids
             and not (e.type == "impression" and (e.user_id, e.session_id, e.item_id) in drop)]
    return Split(train, cases, len(events) - len(train))


def rank_metrics(top_k: Callable[[Case, int], Sequence[int]], cases: Sequence[Case], k: int = K) -> dict:
    """HR@k and nDCG@k of `top_k(case, k)` (its history, ranked among `shown` when set) over the cases,
    with their standard errors."""
    hr, nd = [], []
    for c in cases:
        ranked = [int(i) for i in top_k(c, k)][:k]
        hr.append(rank.hit_rate_at_k(ranked, {c.target}, k))
        nd.append(rank.ndcg_at_k(ranked, {c.target}, k))
    n = len(cases)

    def se(x):
        return float(np.std(x, ddof=1) / np.sqrt(n)) if n > 1 else float("inf")

    return {f"HR@{k}": float(np.mean(hr)) if n else 0.0, f"nDCG@{k}": float(np.mean(nd)) if n else 0.0,
            f"HR@{k}_se": se(hr), f"nDCG@{k}_se": se(nd), "users": n}


def gate(candidate: dict, live: dict | None, margin: float = DEFAULT_MARGIN) -> dict:
    """Each gated metric must be at least (1 - margin) x the live model's; no live model: passes, said so."""
    out: dict[str, Any] = {"margin": margin, "passed": True, "reasons": [], "checks": {}}
    if live is None:
        out["reasons"].append("no live model to compare with: accuracy gate not applied")
        return out
    for name in GATED_METRICS:
        floor = (1.0 - margin) * live[name]
        ok = candidate[name] >= floor
        out["checks"][name] = {"candidate": candidate[name], "live": live[name], "floor": floor, "passed": bool(ok)}
        if not ok:
            out["passed"] = False
            out["reasons"].append(f"{name} {candidate[name]:.4f} < {1 - margin:.2f} x live {live[name]:.4f}")
    return out


@dataclass
class Outcome:
    """What one gated retrain produced, whatever the model kind (torch here, numpy in bench/drift)."""

    model: Any
    window: tuple[float, float]
    counts: dict
    holdout: dict  # {"candidate": metrics, "live": metrics | None}
    gate: dict
    seconds: float
    extra: dict = field(default_factory=dict)


def gated_retrain(events: Sequence[Event], window: tuple[float, float],
                  fit: Callable[[list[Event], np.ndarray | None], Any],
                  top_k: Callable[[Any, Case, int], Sequence[int]], live: Any = None,
                  margin: float = DEFAULT_MARGIN, min_items: int = MIN_EVENTS,
                  half_life_days: float | None = None) -> Outcome:
    """Window -> leave-last-out -> fit on the rest -> both models on the hold-out -> accuracy gate.

    `fit(train_events, weights)`: weights are recency_weights of the training events against the
    window's end (aligned with them), None without a half-life; each model kind applies them its way.
    """
    win = in_window(events, *window)
    split = hold_out_newest_pick(win, min_items)
    if not split.cases:
        raise DataError(f"no user engaged with {min_items} distinct items in the window "
                        f"{iso(window[0])} .. {iso(window[1])}; widen it (--window-days)")
    weights = recency_weights(split.train, window[1], half_life_days)
    t0 = time.perf_counter()
    model = fit(split.train, weights)
    took = time.perf_counter() - t0
    cand = rank_metrics(lambda c, k: top_k(model, c, k), split.cases)
    old = rank_metrics(lambda c, k: top_k(live, c, k), split.cases) if live is not None else None
    counts = {"events_in_window": len(win), "train_events": len(split.train),
              "train_engagements": sum(engaged(e) for e in split.train), "held_out_events": split.held_out_events,
              "users": len({e.user_id for e in win}), "items": len({e.item_id for e in win if e.item_id is not None}),
              "holdout_users": len(split.cases), "holdout_within_shown": sum(c.shown is not None for c in split.cases),
              "train_weight": float(weights.sum()) if weights is not None else float(len(split.train))}
    return Outcome(model, window, counts, {"candidate": cand, "live": old}, gate(cand, old, margin), took,
                   {"split": split})


def iso(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(t))
