"""Business rules that the server and the device both apply to a scored list."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence


def apply_rules(
    ranked: Sequence[tuple[int, float]],
    k: int,
    exclude: Iterable[int] = (),
    in_stock: Mapping[int, bool] | None = None,
    category: Mapping[int, str] | None = None,
    max_per_category: int | None = None,
) -> list[tuple[int, float]]:
    """Walk a best-first list and keep the first k items that pass every rule.

    Rules: drop excluded items (bought or consumed), drop items known to be out
    of stock, keep at most `max_per_category` items of one category (None: no cap).
    """
    excluded = set(exclude)
    per_cat: dict[str, int] = {}
    out: list[tuple[int, float]] = []
    for item_id, score in ranked:
        if item_id in excluded:
            continue
        if in_stock is not None and not in_stock.get(item_id, True):
            continue
        if max_per_category is not None and category is not None:
            cat = category.get(item_id, "")
            if per_cat.get(cat, 0) >= max_per_category:
                continue
            per_cat[cat] = per_cat.get(cat, 0) + 1
        out.append((item_id, score))
        if len(out) == k:
            break
    return out


def top_by_score(item_ids: Sequence[int], scores: Sequence[float]) -> list[tuple[int, float]]:
    """Best first; ties broken by item id so server and device agree exactly."""
    pairs = sorted(zip((int(i) for i in item_ids), (float(s) for s in scores)), key=lambda p: (-p[1], p[0]))
    return pairs


_ODDS_EPS = 1e-7  # a probability this close to 0 or 1 is taken as that far from it: its log-odds stay finite


def demote_popular(item_ids: Sequence[int], scores: Sequence[float], popular: Sequence[int],
                   strength: float) -> list[float]:
    """Scores after the popularity knob: the item at 0-based rank r of the n-item popular list has its odds
    divided by exp(strength * (n - r) / n) (the most popular item by e^strength, the n-th by e^(strength/n));
    every other item keeps its score exactly.

    The popularity knob the device can apply as the server does: it needs nothing but the popular list,
    which every sync answer signs (the manifest's `popular`), so an offline answer tilts away from the
    head as the server's does. Scores are click probabilities (every ranker's output), so the knob acts
    on their log-odds: a shift in probability would mean little near 1, where a good model's top
    candidates sit, and `strength` 1 costs the head as much whatever the model's calibration. 0 = off."""
    if strength <= 0 or not popular:
        return [float(s) for s in scores]
    n = len(popular)
    rank: dict[int, int] = {}
    for pos, i in enumerate(popular):
        rank.setdefault(int(i), pos)  # a product listed twice keeps its better rank
    out = []
    for i, s in zip(item_ids, scores):
        s = float(s)
        at = rank.get(int(i))
        if at is not None:
            p = min(max(s, _ODDS_EPS), 1.0 - _ODDS_EPS)
            z = math.log(p / (1.0 - p)) - strength * (n - at) / n
            demoted = 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))  # no overflow
            s = min(s, demoted)  # the clamp must not lift a score below 1e-7 above its neighbours
        out.append(s)
    return out


# --- score adjustments and slots (server side; the device applies apply_rules and demote_popular only) ---


def exposure_penalty(shown: float, cap: float, strength: float) -> float:
    """Score taken off an item shown `shown` times: nothing up to `cap`, then
    `strength` per doubling past it, so the most-shown items give way to others
    without dropping out (popularity bias is a tilt, not a ban)."""
    if cap <= 0 or strength <= 0 or shown <= cap:
        return 0.0
    return strength * math.log2(shown / cap)


def adjust_scores(
    item_ids: Sequence[int],
    scores: Sequence[float],
    boosts: Mapping[int, float] | None = None,
    exposures: Mapping[int, float] | None = None,
    exposure_cap: float = 0.0,
    exposure_strength: float = 0.0,
    category: Mapping[int, str] | None = None,
    category_share: Mapping[str, float] | None = None,
    category_weight: float = 0.0,
) -> list[float]:
    """Model scores after business adjustments, in this order: multiply by the
    item's boost, add `category_weight` times the user's recent share of
    interactions in the item's category, subtract the exposure penalty."""
    out = []
    for item_id, score in zip(item_ids, scores):
        s = float(score) * (boosts.get(item_id, 1.0) if boosts else 1.0)
        if category_share and category is not None and category_weight:
            s += category_weight * category_share.get(category.get(item_id, ""), 0.0)
        if exposures:
            s -= exposure_penalty(exposures.get(item_id, 0.0), exposure_cap, exposure_strength)
        out.append(s)
    return out


def place_pins(
    ranked: Sequence[tuple[int, float]], pins: Sequence[tuple[int, float]], k: int
) -> list[tuple[int, float]]:
    """Put the pinned items first, in the given order, then the ranked list
    without them, cut to k. Pins must already have passed the filtering rules."""
    pinned = {i for i, _ in pins}
    return (list(pins) + [p for p in ranked if p[0] not in pinned])[:k]


def place_exploration(
    ranked: Sequence[tuple[int, float]], item: tuple[int, float] | None, position: int, k: int
) -> list[tuple[int, float]]:
    """Put one exploration item at the 1-based `position` (or last, if the list
    is shorter), keeping k items. Nothing changes if `item` is None or already listed."""
    out = list(ranked)
    if item is None or position < 1 or any(i == item[0] for i, _ in out):
        return out[:k]
    at = min(position, k, len(out) + 1) - 1
    out.insert(at, item)
    return out[:k]


def pick_exploration(
    pool: Sequence[int], provisional: Iterable[int], exposures: Mapping[int, float] | None, u: float
) -> int | None:
    """Choose the exploration item from `pool` (candidates not already shown),
    with u uniform in [0, 1): a new product with a provisional vector if the pool
    has one, else one of the least-shown quarter of the pool."""
    if not pool:
        return None
    provisional = set(provisional)
    new = [i for i in pool if i in provisional]
    if new:
        return new[min(int(u * len(new)), len(new) - 1)]
    shown = exposures or {}
    least = sorted(pool, key=lambda i: (shown.get(i, 0.0), i))[: max(1, len(pool) // 4)]
    return least[min(int(u * len(least)), len(least) - 1)]
