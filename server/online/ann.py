"""Approximate retrieval for large catalogues: a faiss HNSW index over the item vectors.

Below `Config.ann_min_items` products (200,000 by default) the ranker scans the catalogue exactly;
above it, the ranker asks this index for candidates and scores them exactly (docs/scaling.md has the
measurements behind every number here).

Inner product is not a metric, and HNSW on raw inner products finds only about 0.8 of the exact top
200 on vectors shaped like the model's (their norms spread threefold). So the index holds each item
augmented to length R (x, sqrt(R^2 - |x|^2)), R the largest norm, and is searched in L2 with the
query (u, 0): |u|^2 + R^2 - 2 u.x orders items exactly as u.x does, and L2 is a metric HNSW handles
well (the MIPS-to-L2 reduction of Bachrach et al., 2014).

Products added or re-estimated after the build (POST /v1/items, `pocketrank refresh-items`) are not
written into the graph: faiss' HNSW cannot update a row, and searching while adding is not
thread-safe. An `AnnView` of a catalogue holds the rows that differ from the build (new ids, or a
vector that differs from the graph's copy) and scans them exactly beside the graph's answer, so a
new product is retrievable at once; candidates are always scored with the catalogue's current vectors. When those rows pass
`REBUILD_SHARE` of the catalogue, a new index is built off the request path and replaces the old one;
the server's first index is built off it too (the exact scan answers until it is ready).
An index is saved under the home (keyed by a digest of its ids and vectors), so workers and restarts
load it instead of building it again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

# Measured by `python -m bench scale -- --only ann` (docs/scaling.md): with M 32 and efConstruction 200,
# efSearch 800 reaches recall@200 0.959 on 200,000 products but 0.902 on 1,000,000 (1,600: 0.941; 3,200:
# 0.966), so the search widens with the catalogue: EF_SEARCH below LARGE products, EF_SEARCH_LARGE from there.
M, EF_CONSTRUCTION, EF_SEARCH = 32, 200, 800
LARGE, EF_SEARCH_LARGE = 500_000, 3200
BUILD_THREADS = 2  # the build is the only multi-threaded step; a query runs on the caller's thread
REBUILD_SHARE = 0.05  # rebuild once this share of the catalogue is scanned exactly beside the graph
KEEP_FILES = 2  # saved indexes kept per directory


def ef_search_for(n_items: int) -> int:
    """The HNSW search width for a catalogue of this size (a query asking for more gets twice its k)."""
    return EF_SEARCH_LARGE if n_items >= LARGE else EF_SEARCH


def catalogue_digest(ids: np.ndarray, vectors: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(ids, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())
    h.update(f"M{M}-efc{EF_CONSTRUCTION}".encode())
    return h.hexdigest()[:24]


class AnnIndex:
    """An HNSW graph over (ids, vectors) as they were when it was built."""

    def __init__(self, ids: np.ndarray, vectors: np.ndarray, index=None, radius: float | None = None):
        import faiss

        self.ids = np.asarray(ids, dtype=np.int64)
        if radius is None:
            radius = float(np.linalg.norm(vectors, axis=1).max()) if len(vectors) else 1.0
        self.radius = float(radius)
        if index is None:
            index = faiss.IndexHNSWFlat(vectors.shape[1] + 1, M)
            index.hnsw.efConstruction = EF_CONSTRUCTION
            threads = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(min(BUILD_THREADS, os.cpu_count() or 1))
            try:
                for lo in range(0, len(vectors), 100_000):  # augmented in chunks: no second full copy
                    index.add(self._augment(vectors[lo:lo + 100_000]))
            finally:
                faiss.omp_set_num_threads(threads)
        self.index = index
        self.ef_search = ef_search_for(len(self.ids))

    def _augment(self, x: np.ndarray) -> np.ndarray:
        sq = np.maximum(self.radius ** 2 - np.einsum("ij,ij->i", x, x), 0.0)
        return np.hstack([x, np.sqrt(sq)[:, None]]).astype(np.float32)

    def stored(self) -> np.ndarray:
        """The vectors as the graph holds them, (n, dim): a view of faiss' own storage, no copy."""
        import faiss

        storage: Any = faiss.downcast_index(self.index.storage)  # an IndexFlatL2
        n, d = self.index.ntotal, self.index.d
        return faiss.rev_swig_ptr(storage.get_xb(), n * d).reshape(n, d)[:, :d - 1]

    def search(self, user_vec: np.ndarray, k: int) -> np.ndarray:
        """Ids of (about) the k items of largest inner product with user_vec, in no particular order."""
        import faiss

        k = min(k, len(self.ids))
        if k <= 0:
            return self.ids[:0]
        q = np.append(np.asarray(user_vec, dtype=np.float32), np.float32(0.0))[None]
        params = faiss.SearchParametersHNSW(efSearch=max(self.ef_search, 2 * k))  # type: ignore[attr-defined]
        _, rows = self.index.search(q, k, params=params)
        rows = rows[0]
        return self.ids[rows[rows >= 0]]

    def nbytes(self) -> int:
        """Bytes the graph and its vectors take (what faiss would write)."""
        import faiss

        return int(faiss.serialize_index(self.index).nbytes)

    def save(self, path: Path) -> None:
        import faiss

        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        faiss.write_index(self.index, str(tmp))
        np.savez(tmp.with_suffix(".npz"), ids=self.ids, radius=self.radius)
        os.replace(tmp.with_suffix(".npz"), path.with_suffix(".npz"))
        os.replace(tmp, path)
        # Each rebuild writes a new file: keep this one and the one before (a worker may be loading it).
        for old in sorted(path.parent.glob("*.faiss"), key=lambda p: p.stat().st_mtime)[:-KEEP_FILES]:
            old.unlink(missing_ok=True)
            old.with_suffix(".npz").unlink(missing_ok=True)

    @classmethod
    def load(cls, path: Path) -> AnnIndex:
        import faiss

        with np.load(path.with_suffix(".npz")) as z:
            ids, radius = z["ids"], float(z["radius"])
        return cls(ids, np.zeros((0, 0), dtype=np.float32), faiss.read_index(str(path)), radius)

    @classmethod
    def build_or_load(cls, ids: np.ndarray, vectors: np.ndarray, directory: Path | None) -> AnnIndex:
        """Load the index saved for exactly these ids and vectors, else build it (and save it there)."""
        path = directory / f"{catalogue_digest(ids, vectors)}.faiss" if directory is not None else None
        if path is not None and path.exists():
            try:
                return cls.load(path)
            except (OSError, RuntimeError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:  # torn: build again
                log.warning("could not load ANN index %s (%s); building it again", path, exc)
        index = cls(ids, vectors)
        if path is not None:
            try:
                index.save(path)
            except OSError as exc:
                log.warning("could not save ANN index to %s: %s", path, exc)
        return index


@dataclass
class AnnView:
    """An index as one catalogue sees it: the graph plus the rows it does not hold as they are now."""

    index: AnnIndex
    fresh: np.ndarray  # catalogue positions of rows new or changed since the build

    def current(self) -> AnnView:
        return self

    def positions(self, ids: np.ndarray, user_vec: np.ndarray, k: int) -> np.ndarray:
        """Catalogue positions of the candidates, ascending: the graph's k best that the catalogue still
        has, and every fresh row."""
        found = self.index.search(user_vec, k)
        pos = np.searchsorted(ids, found)
        ok = pos < len(ids)
        pos = pos[ok][ids[pos[ok]] == found[ok]]
        return np.union1d(pos, self.fresh)


def view_of(index: AnnIndex, ids: np.ndarray, vectors: np.ndarray) -> AnnView:
    pos = np.searchsorted(index.ids, ids)
    pos = np.minimum(pos, max(len(index.ids) - 1, 0))
    same = (index.ids[pos] == ids) if len(index.ids) else np.zeros(len(ids), dtype=bool)
    stored = index.stored()
    rows = np.nonzero(same)[0]
    for lo in range(0, len(rows), 65_536):  # in chunks: the comparison's temporary stays small
        at = rows[lo:lo + 65_536]
        same[at] = (stored[pos[at]] == vectors[at]).all(axis=1)
    return AnnView(index, np.nonzero(~same)[0])


class AnnSlot:
    """The index of one vector space (a model version), shared by every catalogue of it.

    With `background` (the server), the first index and every rebuild are built in a thread: until
    the first is ready `view` answers None (the exact scan serves), and a rebuild's index serves the
    views asked for after it is done. Without (publish, a batch job), `view` builds in the caller."""

    def __init__(self, directory: Path | None = None, background: bool = True):
        self.directory = directory
        self.background = background
        self.index: AnnIndex | None = None
        self._lock = threading.Lock()
        self._building = False

    def view(self, ids: np.ndarray, vectors: np.ndarray) -> AnnView | None:
        if self.index is None:
            self._build(ids, vectors)
            if self.index is None:
                return None
        view = view_of(self.index, ids, vectors)
        if len(view.fresh) > REBUILD_SHARE * len(ids):
            self._build(ids, vectors)
            if view.index is not self.index and self.index is not None:  # built in this thread
                view = view_of(self.index, ids, vectors)
        return view

    def _build(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        with self._lock:
            if self._building:
                return
            self._building = True

        def job() -> None:
            try:
                self.index = AnnIndex.build_or_load(ids, vectors, self.directory)
            except Exception:  # whatever served before keeps serving; say why this index did not come
                log.exception("building the ANN index failed; the %s keeps serving",
                              "previous index" if self.index is not None else "exact scan")
            finally:
                self._building = False

        if self.background:
            threading.Thread(target=job, name="ann-build", daemon=True).start()
        else:
            job()


class LiveView:
    """What a Ranker holds: a slot as one catalogue sees it, followed across builds.

    `current()` is the view of the slot's newest index (computed once per index), or None while the
    slot has none yet."""

    def __init__(self, slot: AnnSlot, ids: np.ndarray, vectors: np.ndarray):
        self.slot, self.ids, self.vectors = slot, ids, vectors
        self._view: AnnView | None = None

    def current(self) -> AnnView | None:
        view = self._view
        if view is None or view.index is not self.slot.index:
            view = self._view = self.slot.view(self.ids, self.vectors)
        return view


class AnnIndexes:
    """AnnSlots by a space's key (a model version and whether the vectors are the store's); the `keep`
    most recently used are held (at a million products an index is about half a gigabyte).
    `background`: build in a thread (the server) or in the caller (publish)."""

    def __init__(self, min_items: int, keep: int = 3, background: bool = True):
        self.min_items = min_items
        self.keep = keep
        self.background = background
        self._slots: OrderedDict[object, AnnSlot] = OrderedDict()
        self._lock = threading.Lock()

    def wanted(self, n_items: int) -> bool:
        return self.min_items > 0 and n_items >= self.min_items

    def view(self, key: object, ids: np.ndarray, vectors: np.ndarray, directory: Path | None = None) -> LiveView | None:
        """A live view for this catalogue when it is large enough to want one, else None (the exact scan).
        `directory`: where this space's index is saved and looked for. The first view of a space starts
        building (or loading) its index."""
        if not self.wanted(len(ids)):
            return None
        with self._lock:
            slot = self._slots.get(key)
            if slot is None:
                slot = self._slots[key] = AnnSlot(directory, self.background)
                while len(self._slots) > self.keep:
                    self._slots.popitem(last=False)
            self._slots.move_to_end(key)
        live = LiveView(slot, ids, vectors)
        live.current()
        return live
