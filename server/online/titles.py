"""An inverted index over item titles, so a search event finds its items without a catalogue scan.

pocketrank.shared.features.query_vector defines a search's vector (the mean vector of the
first 20 items, by id, whose title holds every query token). It scans every
title, which is fine on a device's few hundred cached items and too slow for
the server's updater on 50,000 products. This index gives the same vector.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from pocketrank.shared.features import tokens


class TitleIndex:
    def __init__(self, titles: Mapping[int, str], vectors: Mapping[int, np.ndarray]):
        self.vectors = vectors
        self.postings: dict[str, set[int]] = {}
        for item_id, title in titles.items():
            if item_id not in vectors:
                continue
            for tok in set(tokens(title)):
                self.postings.setdefault(tok, set()).add(item_id)

    def query_vector(self, query: str, max_items: int = 20) -> np.ndarray | None:
        wanted = set(tokens(query))
        if not wanted:
            return None
        sets = sorted((self.postings.get(t, set()) for t in wanted), key=len)
        hits = set(sets[0]).intersection(*sets[1:])
        if not hits:
            return None
        chosen = sorted(hits)[:max_items]
        return np.mean([self.vectors[i] for i in chosen], axis=0).astype(np.float32)
