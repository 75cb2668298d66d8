"""What the API serves from: the store, the current catalogue and ranker, the embedded updater.

A worker keeps no state of its own beyond caches: everything lives in the
store, and caches are checked against the store's versions every
`refresh_seconds`, so any number of workers (gunicorn, or several machines
on Redis) answer alike.

Which model answers a user is the model registry's call (server/release/registry.py): the
canary's version for users who hash into the running rollout's share, else the registry's live
version, else (no registry yet) the store's current model. The registry file is re-read when its
mtime changes, so a rollback by `pocketrank canary check` takes effect on the next request. A
shadow version, if one is set, also ranks a sample of personal requests off the answer's path
(server/release/shadow.py).
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from dataclasses import dataclass

import numpy as np

from pocketrank.shared.errors import PocketrankError
from pocketrank.shared.features import user_vector

from ..config import Config
from ..home import Home
from ..release import shadow as shadow_mod
from ..release.canary import in_canary
from ..release.registry import Registry
from ..stores import open_store
from ..training.content import ContentTower
from . import segments as seg
from .ann import AnnIndexes
from .catalogue import Catalogue, CatalogueCache, provisional_vector
from .ranker import Ranker, Ranking, Rules, Signals, popular
from .updater import Updater
from .versions import Rankers, VersionRanker

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
        self.updater = Updater(self.store, self._fold_catalogue, config.updater_batch, config.recent_length)
        self.rules = Rules.from_config(config)
        self.rng = random.Random()
        self.model_version = ""
        self.ranker: Ranker | None = None
        self._ranker_key: tuple | None = None
        self.rankers = Rankers(self.home, config.n_candidates, self.rules, indexes=AnnIndexes(config.ann_min_items))
        self.registry = Registry(self.home.root)
        self._registry_stamp: tuple | None = None
        self._routing: dict = {}
        self.shadow = shadow_mod.ShadowRunner()
        self._lock = threading.Lock()
        self._stats_at = -float("inf")
        self._stats_busy = threading.Lock()
        self.popular: list[int] = []
        self.exposures: dict[int, int] = {}
        self.segments: dict[str, np.ndarray] = {}
        self.segment_popular: dict[str, list[tuple[int, float]]] = {}
        self.cached_bundle_version = 0
        self._tower: ContentTower | None = None
        self._tower_key: str | None = None
        self.warm()
        if config.updater == "embedded":
            self.catch_up()

    def warm(self) -> None:
        """Load the catalogue and build the updater's lookups now, not in the first request."""
        cat = self.catalogues.get()
        cat.vector_map()
        cat.title_index()
        # The live version's ONNX sessions, and one encoder run (onnxruntime's first run is its slowest):
        # otherwise the first recommendation after a start pays for them and misses a device's budget.
        # Above ann_min_items products this also starts building (or loading) its ANN index, in a thread.
        if not self.store.get_meta("current_model"):
            return  # nothing trained yet
        try:
            self.refresh()  # the store's model first: the live version falls back to it
            vr = self.version_ranker(self.live_version())
        except PocketrankError as exc:
            log.warning("could not load the live model at start: %s", exc)
            return
        if vr.encoder is not None and len(cat.ids):
            first = int(cat.ids[0])
            vr.encoder.user_vector([{"type": "click", "item_id": first, "timestamp": 0.0}], cat.vector_map())

    def catch_up(self) -> int:
        """Fold whatever the log holds that no one folded yet (after a crash, or another process's appends)."""
        try:
            return self.updater.drain()
        except (PocketrankError, TimeoutError) as exc:
            log.warning("updater could not catch up: %s", exc)
            return 0

    def _fold_catalogue(self) -> Catalogue:
        # The updater's catalogue is checked against the store on every step (two meta reads), not
        # every refresh_seconds: a re-base (server/jobs/rebase.py) swaps vectors and user states at once,
        # and a step folding into the new states with the old vectors would mix two spaces.
        self.catalogues.invalidate()
        return self.catalogues.get()

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
                    # The catalogue's own model, so version and catalogue cannot come from two reads
                    # a re-base fell between; with none, current_model raises ModelError (503).
                    version = model_version or self.home.current_model(self.store)
                    self.ranker = self.rankers.get(version, cat, True, self.rules).ranker
                    self.model_version, self._ranker_key = version, (model_version, id(cat))
        self.routing()
        if self._stats_at == -float("inf"):
            self.refresh_stats()
        elif time.monotonic() - self._stats_at >= self.config.stats_refresh_seconds and not self._stats_busy.locked():
            # Off the request path: rereading counters for 50,000 items would stall this answer
            # and, through the GIL, the ones behind it. Until it is done the old stats serve.
            threading.Thread(target=self.refresh_stats, daemon=True).start()

    def routing(self) -> dict:
        """The registry as last read; reread when the file changed (a stat per request, ~2 us)."""
        try:
            st = os.stat(self.registry.path)
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            stamp = None
        if stamp != self._registry_stamp:
            try:
                data = self.registry.load() if stamp else {"versions": {}, "rollout": None, "shadow": None}
            except ValueError as exc:  # a hand-edited, broken file: keep serving as before, say why
                log.error("%s is not valid JSON (%s); routing unchanged", self.registry.path, exc)
                data = self._routing
            self._routing, self._registry_stamp = data, stamp
        return self._routing

    def live_version(self, data: dict | None = None) -> str:
        """The registry's live version when it has one this server can load, else the store's model."""
        live = Registry.live_of(self.routing() if data is None else data)
        if live and live != self.model_version and not self.rankers.available(live):
            log.warning("registry's live model %s has no exported ranker here; serving %s", live, self.model_version)
            return self.model_version
        return live or self.model_version

    def model_for(self, user_id: str, data: dict | None = None) -> str:
        """The version that answers this user: the rollout's canary if they hash into it, else live.
        `data`: the registry as `routing()` last read it (a request passes what `refresh` read)."""
        data = self.routing() if data is None else data
        ro = data.get("rollout")
        if ro and in_canary(user_id, ro["rollout_id"], ro["share"]) and self.rankers.available(ro["version"]):
            return ro["version"]
        return self.live_version(data)

    def version_ranker(self, version: str) -> VersionRanker:
        cat = self.catalogues.get()
        return self.rankers.get(version, cat, version == self.model_version, self.rules)

    def refresh_stats(self) -> None:
        with self._stats_busy:
            cat = self.catalogues.get()
            self.popular = popular(self.store.item_counts(), cat.in_stock)
            self.exposures = self.store.exposures()
            self.segments = seg.loads(self.store.get_meta(seg.META_KEY))
            self.segment_popular = seg.loads_popular(self.store.get_meta(seg.POPULAR_KEY))
            self.cached_bundle_version = self.bundle_version
            self._stats_at = time.monotonic()

    def user_embedding(self, ctx, user_id: str) -> tuple[np.ndarray, str | None, str]:
        """(vector, model version, source): the vector this user's personal answers rank with now, so that
        GET /v1/users shows what the ranking reads. Source "encoder" (a sequence model's output over the
        recent events) or "state" (the folded state's), in the model version's space; "none" when the user's
        version has no vector for them (no weighted event, or none on a product it knows: their answers come
        from the segment prior or popularity), or no model is loaded: then the folded state's vector, in the
        store's space."""
        try:
            self.refresh()  # the routing and the store's model, as a recommendation would read them
            version = self.model_for(user_id, self._routing)
            vr = self.version_ranker(version)
            uv = vr.user_vector(ctx)
        except PocketrankError as exc:  # no model yet, or its files are missing: the store's record still stands
            log.debug("user %s: no model vector (%s)", user_id, exc)
            uv, vr = None, None
        if uv is None or vr is None:
            return user_vector(ctx.record.state), self.model_version or None, "none"
        return uv, version, "encoder" if vr.encoder is not None else "state"

    def recommend(self, user_id: str, k: int, attrs: dict[str, str] | None = None) -> Recommendation:
        """Personal ranking if the user has a state; else their segment's prior (server/online/segments.py);
        else popular items."""
        self.refresh()
        version = self.model_for(user_id, self._routing)  # refresh() has just read the registry
        vr = self.version_ranker(version)
        ranker = vr.ranker
        ctx = self.store.user_context(user_id, self.catalogue.dim)
        signals = Signals(exclude=ctx.consumed, features=ctx.features, exposures=self.exposures,
                          rng=self.rng if self.rules.explore_position else None, popular=self.popular)
        segment = None
        uv = vr.user_vector(ctx)
        listed = seg.lookup_popular(self.segment_popular, attrs or {}) if uv is None else None
        if uv is not None:
            path = "personal"
        elif listed is not None:  # model-free, so any version may answer with it
            path, segment = "segment", listed[1]
        elif vr.native:
            # Segment vectors are averages of the store's (native) user vectors: no other space has them.
            found = seg.lookup(self.segments, attrs or {})
            uv, path = (found[0], "segment") if found else (None, "popular")
            segment = found[1] if found else None
        else:
            path = "popular"
        if uv is not None:
            ranking = ranker.rank_with_rules(uv, k, signals)
        elif listed is not None:  # popular products after the segment's, so the rules never empty the list
            held = {i for i, _ in listed[0]}
            ranking = ranker.finish(listed[0] + [(i, 0.0) for i in self.popular if i not in held], k, signals)
        else:
            ranking = self._popular(k, signals, ranker)
        if path == "personal":
            self._shadow(user_id, version, ctx, ranking, k, signals)
        return Recommendation(ranking.items, ranking.slots, path, version, segment)

    def _shadow(self, user_id: str, served_version: str, ctx, ranking: Ranking, k: int, signals: Signals) -> None:
        sh = self._routing.get("shadow")
        if not sh or sh["version"] == served_version or not self.shadow.sampled(
                user_id, f"shadow:{sh['version']}:{sh['started_at']}", float(sh["sample"])):
            return
        target = self.shadow.log_for((sh["version"], sh["started_at"]))
        served = [i for i, _ in ranking.items]
        scores = [float(s) for _, s in ranking.items]
        at = time.time()
        quiet = Signals(exclude=signals.exclude, features=signals.features, exposures=signals.exposures,
                        popular=signals.popular)
        cat, native = self.catalogues.get(), sh["version"] == self.model_version  # no store reads off-thread
        rules = self.rules

        def job():
            vr = self.rankers.get(sh["version"], cat, native, rules)
            uv = vr.user_vector(ctx)
            if uv is None or not served:
                return None
            theirs = [i for i, _ in vr.ranker.rank_with_rules(uv, k, quiet).items]
            return shadow_mod.compare(user_id, at, served, scores, theirs,
                                      vr.ranker.score(uv, np.asarray(served, dtype=np.int64)))

        self.shadow.submit(target, job)

    def new_product_vector(self, item, cat: Catalogue) -> np.ndarray:
        """A product no training run has seen: the current sequence model's content tower when its content
        has a known token (what id dropout trained it for), else the catalogue's estimate from its category
        and title neighbours (pocketrank.server.online.catalogue.provisional_vector)."""
        version = self.catalogues.model_version or ""
        if self._tower_key != version:
            self._tower = ContentTower.load(self.home.model_dir(version)) if version else None
            self._tower_key = version
        v = self._tower.vector(item) if self._tower is not None else None
        return v if v is not None else provisional_vector(item, cat)

    def _popular(self, k: int, signals: Signals, ranker: Ranker | None = None) -> Ranking:
        # No model scored these; the wire format promises 0.0 on this path.
        fallback = ranker or self.ranker
        assert fallback is not None  # only called once a model is loaded
        return fallback.finish([(i, 0.0) for i in self.popular], k, signals)
