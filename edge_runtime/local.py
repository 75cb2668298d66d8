"""The local answer: rerank the user's cached candidates on the device, or fall back without a blank screen.

In order: `edge` (the int8 ranker over the cached candidates with the
on-device user state), `cache` (the candidates in the server's order, when
there is no usable ranker or state), `popular` (no candidates for this user).
Business rules (pocketrank.shared.rules, as on the server) drop items this user consumed
on the device, cap items per category and tilt scores away from the popular list (the server's
popularity knob, from the manifest's `rules`); dropping out-of-stock items is an
option (off by default: the stock flags are as old as the bundle, and
docs/wire-format.md §12 specifies the device without it). If the rules leave
fewer than k, popular items fill the list, each marked as such.

Everything here runs on item indexes (the packed rows, the records and
`popular` carry them); the answer names each item by the product's own id, from
its held entry. An index the device holds no entry for cannot be named, so it is
never shown (packed rows already leave such candidates out; popular ones too).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Set

import numpy as np

from pocketrank.shared.features import ranker_inputs, user_vector
from pocketrank.shared.rules import apply_rules, demote_popular
from pocketrank.shared.schemas import finite_number

from .cache import DeviceCache, Snapshot
from .rerank import LocalRanker, ModelSlot
from .results import Recommendation, RecommendedItem
from .sequence import DeviceEncoder, history

STAGES = ("read", "features", "model", "rules")


class LocalRecommender:
    def __init__(self, cache: DeviceCache, slot: ModelSlot[LocalRanker], max_model_bytes: int, stale_after: float,
                 clock: Callable[[], float] = time.time, max_per_category: int | None = None,
                 drop_out_of_stock: bool = False):
        self.cache, self.slot = cache, slot
        self.drop_out_of_stock = drop_out_of_stock
        self.max_model_bytes = max_model_bytes
        self.stale_after = stale_after
        self.clock = clock
        self.max_per_category = max_per_category
        self.encoders: ModelSlot[DeviceEncoder] = ModelSlot()
        # Seconds spent in each stage of the last call: what `bench edge` reports.
        self.stages: dict[str, float] = dict.fromkeys(STAGES, 0.0)

    def _load(self, sha: str) -> LocalRanker:
        return LocalRanker(self.cache.files.read(sha), self.max_model_bytes)

    def user_vector(self, snap: Snapshot, user_id: str) -> np.ndarray | None:
        """The user's vector on the device: a sequence model's encoder over the held history (the server's
        events as of the last sync and every event tracked here since), else the folded state."""
        model = snap.manifest.get("model") or {}
        if model.get("kind") == "sequence":
            row = self.cache.query_one("SELECT sha256 FROM artifacts WHERE name = 'encoder'")
            max_len = int((model.get("encoder") or {}).get("max_len") or 50)
            encoder = self.encoders.get(row[0] if row else None,
                                        lambda sha: DeviceEncoder(self.cache.files.read(sha), max_len,
                                                                  self.max_model_bytes))
            if encoder is None:
                return None
            return encoder.user_vector(*history(self.cache.query, user_id))
        state = self.cache.user_state(user_id)
        return user_vector(state) if state is not None and state.w > 0 else None

    # The manifest's `rules` are signed, so only a server's bug could write a malformed one; the device then
    # answers without that rule rather than raising.

    def _cap(self, snap: Snapshot, override: int | None) -> int | None:
        if override is not None:
            return override
        if self.max_per_category is not None:
            return self.max_per_category
        cap = _rules(snap).get("max_per_category")
        return cap if isinstance(cap, int) and not isinstance(cap, bool) and cap >= 1 else None

    @staticmethod
    def _popular_penalty(snap: Snapshot, override: float | None) -> float:
        """The popularity knob's strength: the caller's, else the server's (the manifest's `rules`); 0 = off."""
        value = finite_number(override if override is not None else _rules(snap).get("popular_penalty"))
        return value if value is not None and value > 0 else 0.0

    def recommend(self, user_id: str, k: int, exclude: Set[str] = frozenset(),
                  max_per_category: int | None = None, popular_penalty: float | None = None) -> Recommendation:
        """`exclude`: products (their own ids) not to show; `max_per_category`, `popular_penalty`: the app's
        own setting instead of the server's."""
        t0 = time.perf_counter()
        snap = self.cache.snapshot()
        now = self.clock()
        expired = bool(snap.manifest) and snap.manifest.get("expires_at", now) < now
        consumed = self.cache.consumed_indexes(user_id)
        if exclude:
            consumed |= set(self.cache.indexes(sorted(exclude)).values())
        cands = self.cache.packed(user_id)
        cap = self._cap(snap, max_per_category)
        stages = self.stages
        if cands is None:
            t1 = time.perf_counter()
            stages.update(read=t1 - t0, features=0.0, model=0.0)
            stale = expired or snap.synced_at is None or now - snap.synced_at > self.stale_after
            picked = self._top_up([], k, consumed, cap, None)
            stages["rules"] = time.perf_counter() - t1
            return self._answer(picked, "popular", snap, snap.version or None, stale)
        ranker = self.slot.get(snap.ranker_sha, self._load)
        t1 = time.perf_counter()
        uv = self.user_vector(snap, user_id)  # a sequence model's encoder runs here: the "features" stage
        model = 0.0
        scores = None
        if ranker is not None and uv is not None and len(cands.ids) and len(uv) == cands.vectors.shape[1]:
            inputs = ranker_inputs(uv, cands.vectors)
            t2 = time.perf_counter()
            scores = ranker.session.run(None, inputs)[0]
            model = time.perf_counter() - t2
            if not np.all(np.isfinite(scores)):  # a damaged model or state: the server's order, never NaN order
                scores = None
        if scores is not None:
            source = "edge"
        else:
            scores, source = cands.scores, "cache"
        tilt = self._popular_penalty(snap, popular_penalty)
        ids = cands.ids.tolist()
        if tilt > 0:
            scores = np.asarray(demote_popular(ids, scores.tolist(), snap.popular, tilt), np.float64)
        if source == "edge":
            order = np.lexsort((cands.ids, -scores))  # best first, ties by id: as pocketrank.shared.rules.top_by_score
        else:  # the server's order; tilted, still the server's among equal f16 scores
            order = np.argsort(-scores, kind="stable") if tilt > 0 else np.arange(len(ids))
        t3 = time.perf_counter()
        ranked = list(zip(cands.ids[order].tolist(), scores[order].tolist()))
        stock = dict(zip(ids, cands.in_stock.tolist())) if self.drop_out_of_stock else None
        category = None
        if cap is not None:
            category = dict(zip(ids, (snap.categories[c] if c < len(snap.categories) else "" for c in cands.cats.tolist())))
        picked = [(i, s, source) for i, s in apply_rules(ranked, k, consumed, stock, category, cap)]
        if len(picked) < k and len(ranked):  # an empty list published for this user is the server's answer
            picked = self._top_up(picked, k, consumed, cap, category)
        stale = expired or now - cands.received_at > self.stale_after
        rec = self._answer(picked, source, snap, cands.version, stale)
        stages.update(read=t1 - t0, features=t3 - t1 - model, model=model, rules=time.perf_counter() - t3)
        return rec

    def _top_up(self, picked: list[tuple[int, float, str]], k: int, consumed: set[int], cap: int | None,
                category: dict[int, str] | None) -> list[tuple[int, float, str]]:
        """Fill up to k with popular items, so a user never sees a short (or empty) list while any are left that
        the rules allow: the same rules as the picked items (the server applies them to its popular list too),
        the per-category cap counting what is already picked (`category`: the picked items', when capped)."""
        popular = self.cache.popular()
        named = self.cache.item_meta(popular)  # only items with a held entry can be named to the app
        held = {i for i, _, _ in picked}
        cats = None if cap is None else {**(category or {}), **{i: m["category"] or "" for i, m in named.items()}}
        stock = {i: m["in_stock"] for i, m in named.items()} if self.drop_out_of_stock else None
        ranked = [(i, s) for i, s, _ in picked] + [(i, 0.0) for i in popular if i in named and i not in held]
        source = {i: src for i, _, src in picked}
        return [(i, s, source.get(i, "popular")) for i, s in apply_rules(ranked, k, consumed, stock, cats, cap)]

    def _answer(self, picked: list[tuple[int, float, str]], source: str, snap: Snapshot, version: int | None,
                stale: bool) -> Recommendation:
        meta = self.cache.item_meta([i for i, _, _ in picked])
        named = [(meta[i], s, src) for i, s, src in picked if i in meta]
        items = [RecommendedItem(m["external_id"], float(s), r + 1, m["title"] or "", m["category"] or "", src, stale,
                                 m["price"]) for r, (m, s, src) in enumerate(named)]
        return Recommendation(items, source, snap.model_version, version, stale)


def _rules(snap: Snapshot) -> dict:
    """The manifest's `rules` object ({} when absent or not an object)."""
    rules = snap.manifest.get("rules")
    return rules if isinstance(rules, dict) else {}
