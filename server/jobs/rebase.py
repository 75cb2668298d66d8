"""Re-base the store on a model version: after a promotion, the store's model becomes the promoted one.

Serving ranks with the registry's live version as soon as a canary is promoted (server/online/versions.py
folds each user's last 50 events with its vectors). The store still holds the old model's item
vectors, user states, segment vectors and `current_model`, which /readyz reports, `pocketrank
publish` ships to devices and the real-time updater folds with. `rebase(home, store, version)`
moves all of them to `version`:

1. item vectors: the version's vector for every product it knows; a product it has never seen
   (added after it was trained) gets a provisional, content-only vector computed in the new
   space by catalogue.provisional_vector (its category centroid and its title neighbours among the
   version's vectors: the estimate POST /v1/items makes; no model here has a learnt content map),
   and stays marked provisional, so `pocketrank refresh-items` keeps refining it;
2. user states: every user refolded from log position 0 with the new vectors, by the updater's own
   fold (online.fold.fold_chunks), in chunks of `chunk` events with a tqdm bar; consumed sets and
   popularity are rebuilt alongside, as online.fold.rebuild_states does;
3. segment vectors: recomputed from the refolded states and the user profiles given (the same
   compute_segments `pocketrank features` uses); without profiles they are cleared, since vectors
   of the old space would be wrong in the new one (cold-start users get popular items until
   `pocketrank features` runs);
4. `current_model` set to the version; the registry's live version made equal to it.

Safe while the server keeps ingesting: the long fold (step 2) reads the log up to its head at the
start and writes nothing. Then, holding the updater's lock, it folds the tail logged meanwhile and
writes steps 1-4. On SQLite the whole write is one transaction under the store's write lock
(ingest_tx), so no append or fold interleaves and a failure rolls everything back: the old store is
intact. On Redis the updater lock keeps other folds out while appends go on; events logged after
the tail was read are left pending past the new updater position and folded by the updater with
the new vectors (it checks the store's model on every step, Serving._fold_catalogue). Redis has no
multi-key transaction this size: a failure in the write phase can leave a mixed store, which a
rerun repairs (current_model is written last, so the rerun does not take it for done).

Idempotent: a version the store is already on is left as it is (`force=True` refolds anyway).

    pocketrank rebase r20261126-... --profiles store
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pocketrank.shared.errors import ModelError, ValidationError
from pocketrank.shared.features import user_vector

from ..home import Home
from ..online import segments as seg
from ..online.catalogue import Catalogue, provisional_vector
from ..online.fold import fold_chunks
from ..online.versions import RANKER_FILE, ensure_vectors, version_vectors
from ..release.registry import Registry
from ..stores.base import Store, Updates, UserRecord

log = logging.getLogger(__name__)


def load_profiles(spec: str | None, store: Store | None = None) -> dict[str, dict[str, str]] | None:
    """'store' (the users' attributes imported into the store; none imported: no segments), 'none',
    or a JSON file {user: {attr: value}}."""
    if spec in (None, "none"):
        return None
    if spec == "store":
        if store is None:
            raise ValidationError("profiles", "'store' needs a store to read the imported user attributes from")
        return store.profiles() or None
    try:
        profiles = json.loads(Path(spec).read_text())
    except (OSError, ValueError) as exc:
        raise ValidationError("profiles", f"'store', 'none' or a JSON file {{user: {{attr: value}}}}: {exc}") from exc
    if not isinstance(profiles, dict) or not all(isinstance(v, dict) for v in profiles.values()):
        raise ValidationError("profiles", f"{spec} must hold a JSON object {{user: {{attr: value}}}}")
    return profiles


def new_catalogue(store: Store, ids: np.ndarray, vectors: np.ndarray) -> tuple[Catalogue, set[int]]:
    """The store's products with the version's vectors; the ones it has not seen get provisional vectors
    computed from the known ones (returns the catalogue and those products' ids)."""
    items = store.items()
    if not len(ids):
        raise ModelError("the version has no item vectors")
    by_id = {int(i): v for i, v in zip(ids, vectors)}
    known_items = [it for it in items if it.item_id in by_id]
    if not known_items:
        raise ModelError("the version knows none of the store's products")
    k_ids = np.array([it.item_id for it in known_items], dtype=np.int64)
    known = Catalogue(k_ids, np.stack([by_id[int(i)] for i in k_ids]).astype(np.float32),
                      {it.item_id: it.in_stock for it in known_items}, {it.item_id: it.category for it in known_items},
                      frozenset(), {it.item_id: it.title for it in known_items})
    unseen = {it.item_id: provisional_vector(it, known) for it in items if it.item_id not in by_id}
    all_ids = np.array(sorted(it.item_id for it in items), dtype=np.int64)
    vecs = np.stack([by_id[int(i)] if int(i) in by_id else unseen[int(i)] for i in all_ids]).astype(np.float32)
    cat = Catalogue(all_ids, vecs, {it.item_id: it.in_stock for it in items}, {it.item_id: it.category for it in items},
                    frozenset(unseen), {it.item_id: it.title for it in items})
    return cat, set(unseen)


def check_version(home: Home, registry: Registry, version: str) -> None:
    """Only the registry's live version (or, with no registry, any exported version) is re-based onto."""
    if not (home.model_dir(version) / RANKER_FILE).exists():
        raise ValidationError("version", f"{home.model_dir(version)} has no {RANKER_FILE}; export the model first")
    versions = registry.versions()
    live = registry.live()
    if version in versions and versions[version]["state"] != "live":
        raise ValidationError("version", f"{version!r} is {versions[version]['state']}, not live; "
                                         "promote it through a canary first (docs/canary.md)")
    if version not in versions and live is not None:
        raise ValidationError("version", f"{version!r} is not registered and {live} is live; "
                                         "register and promote it through a canary first")


def rebase(home: Home | Path | str, store: Store, version: str, profiles: Mapping | None = None,
           keep_recent: int = 50, force: bool = False, progress: bool = True, lock_timeout: float = 30.0,
           min_segment_users: int = 5) -> dict:
    """Make `version` the store's model (see the module docstring). Returns what was done, with timings."""
    home = home if isinstance(home, Home) else Home(Path(home))
    registry = Registry(home.root)
    check_version(home, registry, version)
    before = store.get_meta("current_model")
    if before == version and not force:
        return {"model_version": version, "status": "unchanged", "previous": before}
    t0 = time.perf_counter()
    ensure_vectors(home.model_dir(version))
    ids, vecs = version_vectors(home.model_dir(version))
    cat, unseen = new_catalogue(store, ids, vecs)

    # The long part, writing nothing: fold the log as it is now.
    records: dict[str, UserRecord] = {}
    updates = Updates()
    total = store.count_events()
    with tqdm(total=total, desc=f"rebase {version}", unit="ev", disable=not progress) as bar:
        last, n_events = fold_chunks(store.iter_log(0), records, updates, cat.vector_map(), cat.title_index(), cat.dim,
                                      keep_recent, bar)
    t_fold = time.perf_counter()

    with store.updater_session(lock_timeout), store.ingest_tx():
        # No fold runs from here (the updater's lock; on SQLite the write transaction also holds
        # back appends and POST /v1/items): fold what was logged during the long part, then swap.
        items = store.items()  # again: products added meanwhile get their new-space vector too
        vectors = dict(cat.vector_map())
        for it in items:
            if it.item_id not in vectors:
                vectors[it.item_id] = provisional_vector(it, cat)
                unseen.add(it.item_id)
        with store.updater_step():
            tail_last, n_tail = fold_chunks(store.iter_log(last), records, updates, vectors, cat.title_index(), cat.dim,
                                           keep_recent)
        position = tail_last or last
        segments = {}
        if profiles:
            uvs = {u: user_vector(r.state) for u, r in records.items() if r.state.w > 0}
            segments = seg.compute_segments(uvs, profiles, min_segment_users)
        with store.updater_step():
            store.put_items(items, vectors, provisional=unseen)
        with store.updater_step():
            store.reset_derived(records, updates.consumed, updates.popularity, position)
        with store.updater_step():
            store.set_meta(seg.META_KEY, seg.dumps(segments))
            store.set_meta("current_model", version)  # last: a half-done Redis swap is not taken for done
    if registry.live() != version:
        registry.register(version, lineage={"note": "re-based onto by `pocketrank rebase` with no live version"},
                          state="live")
    t_end = time.perf_counter()
    out = {"model_version": version, "status": "rebased", "previous": before, "users": len(records),
           "events": n_events + n_tail, "tail_events": n_tail, "items": len(items),
           "provisional": len(unseen), "segments": len(segments), "position": position,
           "seconds": {"fold": round(t_fold - t0, 3), "swap": round(t_end - t_fold, 3), "total": round(t_end - t0, 3)}}
    log.info("store re-based from %s to %s: %d users refolded, %d items (%d provisional), %d segments, %.2f s",
             before, version, len(records), len(items), len(unseen), len(segments), t_end - t0)
    return out
