"""What the API serves from: the store, the current catalogue and ranker, the embedded updater.

A worker keeps no state of its own beyond caches: everything lives in the
store, and caches are checked against the store's versions every
`refresh_seconds`, so any number of workers (gunicorn, or several machines
on Redis) answer alike.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass

import numpy as np

from shared.errors import PocketrankError
from shared.features import user_vector

from . import segments as seg
from .catalogue import Catalogue, CatalogueCache
from .config import Config
from .home import Home
from .ranking import Ranker, Ranking, Rules, Signals, onnx_session, popular
from .stores import open_store
from .updater import Updater

log = logging.getLogger(__name__)


@dataclass
class Recommendation:
    items: list[tuple[int, float]]
    slots: dict[int, str]
    path: str  # personal | segment | popular
    model_version: str
    segment: str | None = None


class Serving:
    def __init__(self, config: Config):
        self.config = config
        self.home = Home(config.home)
        self.store = open_store(config)
        self.catalogues = CatalogueCache(self.store, config.refresh_seconds)
        self.updater = Updater(self.store, self.catalogues.get, config.updater_batch, config.recent_length)
        self.rules = Rules.from_config(config)
        self.rng = random.Random()
        self.model_version = ""
        self.ranker: Ranker | None = None
        self._ranker_key: tuple | None = None
        self._sessions: dict[str, object] = {}
        self._lock = threading.Lock()
        self._stats_at = -float("inf")
        self._stats_busy = threading.Lock()
        self.popular: list[int] = []
        self.exposures: dict[int, int] = {}
        self.segments: dict[str, np.ndarray] = {}
        self.cached_bundle_version = 0
        self.warm()
        if config.updater == "embedded":
            self.catch_up()

    def warm(self) -> None:
        """Load the catalogue and build the updater's lookups now, not in the first request."""
        cat = self.catalogues.get()
        cat.vector_map()
        cat.title_index()

    def catch_up(self) -> int:
        """Fold whatever the log holds that no one folded yet (after a crash, or another process's appends)."""
        try:
            return self.updater.drain()
        except (PocketrankError, TimeoutError) as exc:
            log.warning("updater could not catch up: %s", exc)
            return 0

    @property
    def catalogue(self) -> Catalogue:
        return self.catalogues.get()

    @property
    def dim(self) -> int:
        return self.catalogue.dim

    @property
    def bundle_version(self) -> int:
        return int(self.store.get_meta("bundle_version", "0") or 0)

    def refresh(self) -> None:
        """Rebuild the ranker when the model or catalogue changed; reread stats when they are due."""
        cat = self.catalogues.get()
        model_version = self.catalogues.model_version
        if (model_version, id(cat)) != self._ranker_key:
            with self._lock:
                if (model_version, id(cat)) != self._ranker_key:
                    version = self.home.current_model(self.store)  # ModelError (503) when none is trained
                    path = str(self.home.model_dir(version) / "ranker.fp32.onnx")
                    if path not in self._sessions:
                        self._sessions = {path: onnx_session(path)}
                    self.ranker = Ranker(cat, self._sessions[path], self.config.n_candidates, rules=self.rules)
                    self.model_version, self._ranker_key = version, (model_version, id(cat))
        if self._stats_at == -float("inf"):
            self.refresh_stats()
        elif time.monotonic() - self._stats_at >= self.config.stats_refresh_seconds and not self._stats_busy.locked():
            # Off the request path: rereading counters for 50,000 items would stall this answer
            # and, through the GIL, the ones behind it. Until it is done the old stats serve.
            threading.Thread(target=self.refresh_stats, daemon=True).start()

    def refresh_stats(self) -> None:
        with self._stats_busy:
            cat = self.catalogues.get()
            self.popular = popular(self.store.item_counts(), cat.in_stock)
            self.exposures = self.store.exposures()
            self.segments = seg.loads(self.store.get_meta(seg.META_KEY))
            self.cached_bundle_version = self.bundle_version
            self._stats_at = time.monotonic()

    def recommend(self, user_id: str, k: int, attrs: dict[str, str] | None = None) -> Recommendation:
        """Personal ranking if the user has a state; else their segment's vector; else popular items."""
        self.refresh()
        ranker = self.ranker
        ctx = self.store.user_context(user_id, ranker.catalogue.dim)
        signals = Signals(exclude=ctx.consumed, features=ctx.features, exposures=self.exposures,
                          rng=self.rng if self.rules.explore_position else None)
        segment = None
        if ctx.record.state.w > 0:
            uv, path = user_vector(ctx.record.state), "personal"
        else:
            found = seg.lookup(self.segments, attrs or {})
            uv, path = (found[0], "segment") if found else (None, "popular")
            segment = found[1] if found else None
        if uv is not None:
            ranking = ranker.rank_with_rules(uv, k, signals)
        else:
            ranking = self._popular(k, signals)
        return Recommendation(ranking.items, ranking.slots, path, self.model_version, segment)

    def _popular(self, k: int, signals: Signals) -> Ranking:
        # No model scored these; the wire format promises 0.0 on this path.
        return self.ranker.finish([(i, 0.0) for i in self.popular], k, signals)
