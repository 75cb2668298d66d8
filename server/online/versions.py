"""A Ranker per model version, so the live model, a canary and a shadow answer side by side.

The store's catalogue holds the current model's item vectors (and provisional vectors for new
products), and the store's user states are folded with them: the store's current model ranks from
those, exactly as a single-model server does ("native"). Any other version (a canary, a shadow, a
promoted model until server/jobs/rebase.py has re-based the store on it) ranks with its own item
vectors, and its user vector is its own fold of the user's recent events (the store keeps the last
`recent_length`, 50 by default; older events weigh under 0.9**50 in the fold, so the two agree to
about 0.5%).

A version's item vectors come from `<home>/models/<version>/item_vectors.npz` (arrays `ids` and
`vectors`) when it exists, else from its `model.pt` with the item ids in `config.json`, as
`pocketrank train` writes them. Products the version has no vector for (added after it was
trained) get its centroid of their category, so every product stays retrievable in every arm.

    rankers = Rankers(home, n_candidates=200, rules=Rules())
    vr = rankers.get("m2", catalogue, native=False)
    uv = vr.user_vector(store.user_context("42", catalogue.dim))
    vr.ranker.rank_with_rules(uv, 10, Signals())
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pocketrank.shared.errors import ModelError
from pocketrank.shared.features import UserState, fold_events, user_vector

from ..home import Home
from .ann import AnnIndexes
from .catalogue import Catalogue
from .encoding import SequenceEncoder, load_encoder
from .ranker import Ranker, Rules, onnx_session

VECTORS_FILE = "item_vectors.npz"
RANKER_FILE = "ranker.fp32.onnx"


def save_vectors(model_dir: Path, ids: np.ndarray, vectors: np.ndarray) -> Path:
    """Write a version's item vectors where `version_vectors` reads them."""
    path = Path(model_dir) / VECTORS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    order = np.argsort(np.asarray(ids, dtype=np.int64), kind="stable")
    with open(path, "wb") as f:
        np.savez(f, ids=np.asarray(ids, dtype=np.int64)[order], vectors=np.asarray(vectors, dtype=np.float32)[order])
    return path


def version_vectors(model_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(ids sorted, vectors) of one model version, from item_vectors.npz or model.pt."""
    model_dir = Path(model_dir)
    path = model_dir / VECTORS_FILE
    if path.exists():
        with np.load(path) as z:
            return z["ids"].astype(np.int64), z["vectors"].astype(np.float32)
    from ..training import model as model_io  # torch, only for versions saved without a vectors file

    m, meta = model_io.load(model_dir)
    if "item_ids" not in meta:
        raise ModelError(f"{model_dir} has neither {VECTORS_FILE} nor item ids in config.json")
    ids = np.asarray(meta["item_ids"], dtype=np.int64)
    vecs = m.item_vectors().detach().numpy().astype(np.float32)
    order = np.argsort(ids, kind="stable")
    return ids[order], vecs[order]


def ensure_vectors(model_dir: Path) -> Path:
    """Write item_vectors.npz from model.pt if it is missing, so serving the version never loads torch
    (called when a version starts a canary or a shadow, off the request path)."""
    path = Path(model_dir) / VECTORS_FILE
    if not path.exists():
        ids, vecs = version_vectors(model_dir)
        save_vectors(model_dir, ids, vecs)
    return path


def catalogue_for(base: Catalogue, ids: np.ndarray, vectors: np.ndarray) -> Catalogue:
    """The store's catalogue (stock, categories, titles) with a version's item vectors."""
    dim = vectors.shape[1] if vectors.ndim == 2 else base.dim
    pos = np.searchsorted(ids, base.ids)
    pos = np.minimum(pos, max(len(ids) - 1, 0))
    known = (ids[pos] == base.ids) if len(ids) else np.zeros(len(base.ids), dtype=bool)
    out = np.zeros((len(base.ids), dim), dtype=np.float32)
    out[known] = vectors[pos[known]]
    if not known.all() and known.any():
        # Products newer than the version: its centroid of their category, else its mean.
        cats = np.array([base.category.get(int(i), "") for i in base.ids], dtype=object)
        mean = out[known].mean(axis=0)
        for cat in set(cats[~known]):
            rows = known & (cats == cat)
            out[~known & (cats == cat)] = out[rows].mean(axis=0) if rows.any() else mean
    return Catalogue(base.ids, out, base.in_stock, base.category, base.provisional, base.titles)


@dataclass
class VersionRanker:
    version: str
    ranker: Ranker
    native: bool  # the store's catalogue and user states are this version's
    vectors: dict[int, np.ndarray] | None = None  # by item id, to fold recent events (not native)
    # The store catalogue it was built on: held so that catalogue's id() cannot be reused by a newer
    # one while this entry is cached, and checked on each hit.
    base: Catalogue | None = None
    # A sequence model's encoder: the user vector is its output over the recent events, native or not.
    encoder: SequenceEncoder | None = None

    def state(self, record) -> UserState:
        """The user's state (a store UserRecord's) in this version's space: the store's own when native,
        else the user's recent events folded with this version's item vectors."""
        if self.native:
            return record.state
        vecs = self.vectors or {}
        return fold_events(((e["type"], vecs.get(e["item_id"]) if e["item_id"] else None)
                            for e in record.recent_events()), self.ranker.catalogue.dim)

    def user_vector(self, ctx) -> np.ndarray | None:
        """The user's vector in this version's space; None for a user with no weighted event yet."""
        if self.encoder is not None:
            vecs = self.vectors if self.vectors is not None else self.ranker.catalogue.vector_map()
            return self.encoder.user_vector(ctx.record.recent_events(), vecs)
        state = self.state(ctx.record)
        return user_vector(state) if state.w > 0 else None


class Rankers:
    """Cached VersionRankers, rebuilt when the store's catalogue object changes; ONNX sessions by path.

    `indexes`: ANN indexes by version, for catalogues above their size threshold (None: always exact)."""

    def __init__(self, home: Home, n_candidates: int = 200, rules: Rules | None = None, keep: int = 6,
                 indexes: AnnIndexes | None = None):
        self.home = home
        self.indexes = indexes
        self.n_candidates = n_candidates
        self.rules = rules
        self.keep = keep
        self._lock = threading.Lock()
        self._rankers: OrderedDict[tuple, VersionRanker] = OrderedDict()
        self._sessions: dict[str, object] = {}
        self._encoders: dict[str, SequenceEncoder | None] = {}
        self._vectors: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def available(self, version: str) -> bool:
        return (self.home.model_dir(version) / RANKER_FILE).exists()

    def get(self, version: str, catalogue: Catalogue, native: bool, rules: Rules | None = None) -> VersionRanker:
        rules = rules or self.rules
        key = (version, id(catalogue), native, id(rules))
        vr = self._rankers.get(key)
        if vr is not None and vr.base is catalogue:
            return vr
        with self._lock:
            vr = self._rankers.get(key)
            if vr is None or vr.base is not catalogue:
                vr = self._build(version, catalogue, native, rules)
                self._rankers[key] = vr
                while len(self._rankers) > self.keep:
                    self._rankers.popitem(last=False)
            return vr

    def _ann(self, version: str, native: bool, catalogue: Catalogue):
        if self.indexes is None:
            return None
        return self.indexes.view((version, native), catalogue.ids, catalogue.vectors,
                                 self.home.model_dir(version) / "ann")

    def _build(self, version: str, catalogue: Catalogue, native: bool, rules: Rules | None) -> VersionRanker:
        path = self.home.model_dir(version) / RANKER_FILE
        if not path.exists():
            raise ModelError(f"model {version} has no {RANKER_FILE} in {path.parent}; run `pocketrank export`")
        session = self._sessions.get(str(path))
        if session is None:
            session = self._sessions[str(path)] = onnx_session(path)
        if version not in self._encoders:
            self._encoders[version] = load_encoder(self.home.model_dir(version))
        encoder = self._encoders[version]
        if native:
            return VersionRanker(version, Ranker(catalogue, session, self.n_candidates, rules=rules,
                                                 ann=self._ann(version, True, catalogue)), True,
                                 base=catalogue, encoder=encoder)
        if version not in self._vectors:
            self._vectors[version] = version_vectors(self.home.model_dir(version))
        ids, vecs = self._vectors[version]
        cat = catalogue_for(catalogue, ids, vecs)
        return VersionRanker(version, Ranker(cat, session, self.n_candidates, rules=rules,
                                             ann=self._ann(version, False, cat)), False,
                             {int(i): v for i, v in zip(ids, vecs)}, base=catalogue, encoder=encoder)
