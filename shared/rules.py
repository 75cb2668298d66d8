"""Business rules that the server and the device both apply to a scored list."""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence


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
