"""The publisher: a signed, versioned bundle of candidates, item vectors and the int8 ranker.

A bundle is the unit a device syncs to. Its manifest (canonical JSON, signed
with ed25519) lists every artifact's sha256 and length. Each user's candidate
record is signed on its own (pocketrank.shared.wire.record_message: version, user id and
sha256 of the raw record), so a device verifies just its own users' records
without an index of every user; the version in the signed message ties a
record to the one manifest (and model) of that version.

Item vectors and metadata travel as signed per-item entries (server/bundle/item_entries.py),
kept in the bundle directory and sent only for the items a device's lists reference.

The record store is a change log: a row only when a user's record changed,
plus every user's 64-byte signature for each version. History older than the
last `keep_versions` bundle versions is compacted away; a device whose cursor
is older gets a full snapshot (docs/sync-protocol.md).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator
from typing import cast

import numpy as np
from tqdm import tqdm

from pocketrank.shared import wire
from pocketrank.shared.features import DECAY, TYPE_WEIGHTS

from ..config import Config
from ..home import Home
from ..online.catalogue import load_catalogue
from ..online.ranker import popular
from ..stores.base import RecordRow
from . import item_entries, variants
from .candidates import RecordJob, make_ranker, make_user_vectors, user_records
from .model_artifacts import load_signer, manifest_artifacts, model_artifacts, model_section, write_bundle_dir
from .on_ray import RayPublish

DEFAULT_EXPIRY_DAYS = 30


def publish_job(home: Home, n_candidates: int = 200, expiry_days: float = DEFAULT_EXPIRY_DAYS,
                progress: bool = True, keep_versions: int | None = None, ray_address: str | None = None,
                now: float | None = None) -> dict:
    """Publish the next bundle version; `keep_versions` (default: the sync_history setting) bounds history.

    `ray_address` (default: the ray_address setting; "" = one process) computes the users' records and the
    item entries as Ray tasks over slices of the users and of the catalogue (server/bundle/on_ray.py); the
    bundle, records and signatures are the same bytes.
    `now` (default: the clock) is the manifest's created_at: the one input that differs between two runs."""
    config = home.config or Config.from_env(home=home.root)
    if keep_versions is None:
        keep_versions = config.sync_history
    if ray_address is None:
        ray_address = config.ray_address
    if keep_versions < 1:
        raise ValueError("keep_versions must be at least 1")
    if not ray_address:
        return _publish(home, config, n_candidates, expiry_days, progress, keep_versions, now, None)
    from ..ray_tasks import ray_session

    with ray_session(ray_address) as ray:
        return _publish(home, config, n_candidates, expiry_days, progress, keep_versions, now, ray)


def _publish(home: Home, config: Config, n_candidates: int, expiry_days: float, progress: bool, keep_versions: int,
             now: float | None, ray) -> dict:
    store = home.store()
    model_version = home.current_model(store)
    model_dir = home.model_dir(model_version)
    export = home.read_json(model_dir / "export.json")
    version = int(cast(str, store.get_meta("bundle_version", "0"))) + 1  # not None: it has a default
    out = home.bundle_dir(version)

    catalogue = load_catalogue(store)
    signer = load_signer(home)
    job = RecordJob(home.root, config, model_version, version, n_candidates, uuid.uuid4().hex)
    # Above ann_min_items products, each user's candidates come from the ANN index, as the server's do; built
    # (or loaded) here first, so that Ray tasks load the index saved under the model instead of building it.
    ranker = make_ranker(catalogue, job)
    on_ray = RayPublish(ray, catalogue, job) if ray is not None else None
    heads = store.record_heads()
    users = store.user_ids()
    t0 = time.perf_counter()
    with tqdm(total=len(users), desc="candidates", unit="user", disable=not progress) as bar:
        if on_ray is not None:
            parts = on_ray.records(users, heads, bar.update)
        else:
            parts = [user_records(ranker, make_user_vectors(catalogue, job), store, signer.sign, version,
                                  _counted(users, bar), heads)]
    t1 = time.perf_counter()
    changed: dict[str, RecordRow] = {}
    sigs: dict[str, bytes] = {}
    sizes = []
    sign_seconds = 0.0
    for part in parts:  # in the users' order, however they were computed
        sign_seconds += part.sign_seconds
        for user_id, digest, sig, blob in zip(part.users, part.digests, part.sigs, part.blobs):
            sigs[user_id] = sig
            if blob is not None:  # a row only when the record changed
                changed[user_id] = RecordRow(version, blob, digest, sig)
                sizes.append(len(blob))
    store.put_records(version, changed, sigs)
    t2 = time.perf_counter()

    # Item entries: one signed PRI2 entry per catalogue item, sent to a device only for the items its
    # lists (and the popular list) reference. An entry unchanged since the previous bundle of the same
    # model keeps its signature and `changed` version, so devices that hold it are not sent it again.
    # (After a canary's promotion, the previous bundle's variant of this model is the previous bundle:
    # the devices that held it keep their entries; server/bundle/variants.py.)
    previous, prev_model = variants.previous_live_entries(home, version, model_version)
    meta = {it.item_id: it.to_dict() for it in store.items()}
    if on_ray is not None:
        entries = on_ray.entries(meta, previous, prev_model)
    else:
        entries = item_entries.build_entries(catalogue.ids, catalogue.vectors, meta, model_version, version,
                                             signer.sign, previous, prev_model)
    items_changed = sum(1 for e in entries.values() if e.changed == version)
    t3 = time.perf_counter()
    artifacts = model_artifacts(model_dir)
    now = time.time() if now is None else now
    manifest = {
        "wire_version": wire.WIRE_VERSION,
        "version": version,
        "created_at": now,
        "expires_at": now + expiry_days * 86400,
        "model_version": model_version,
        "embedding_dim": catalogue.vectors.shape[1],
        "user_state": {"decay": DECAY, "type_weights": dict(TYPE_WEIGHTS)},
        # The cold-start list, signed here; its items' entries come like any candidate list's.
        "popular": popular(store.item_counts(), catalogue.in_stock),
        "items": {"count": len(entries), "precision": "f16"},
        "artifacts": manifest_artifacts(artifacts),
        "model": model_section(export),
        # The server's list rules a device applies too (edge_runtime/local.py): absent when none is set.
        **({"rules": rules} if (rules := device_rules(config)) else {}),
    }
    body = wire.canonical_json(manifest)
    write_bundle_dir(out, entries, artifacts, body, signer.sign(body))
    # A running canary gets its variant of this version before the version is served, so canary users'
    # devices move from the canary at version - 1 to the canary at version, never through the live model.
    variant = variants.build_for_rollout(home, version, store=store, signer=signer, base=catalogue, meta=meta)
    store.set_meta("bundle_version", str(version))
    # Compaction only after the version moved: until then the previous version's signatures are
    # served. A cursor older than keep_from gets a snapshot; one in [keep_from, version] finds its base
    # (and a cursor caught mid-compaction finds its base or none, never a wrong one: then it gets the
    # record whole).
    keep_from = max(1, version - keep_versions + 1)
    store.set_meta("records_history_from", str(keep_from))
    compacted = store.compact_records(keep_from)
    return {
        "version": version,
        "users": len(sigs),
        "records_changed": len(changed),
        "records_compacted": compacted,
        "items_changed": items_changed,
        "items_left_out": len(catalogue.ids) - len(entries),  # unpackable products, named in the log
        "history_from": keep_from,
        "sign_us_per_record": sign_seconds / len(sigs) * 1e6 if sigs else 0.0,
        "bytes": {name: len(d) for name, d in artifacts.items()},
        "record_bytes_mean": float(np.mean(sizes)) if sizes else 0.0,
        # Wall time of the steps: the users' records (what Ray partitions), writing them, the item entries.
        "seconds": {"records": round(t1 - t0, 3), "write": round(t2 - t1, 3), "items": round(t3 - t2, 3),
                    "after": round(time.perf_counter() - t3, 3)},
        **({"canary_variant": variant} if variant else {}),
    }


def device_rules(config: Config) -> dict:
    """The server's list rules that devices apply to their own answers (docs/wire-format.md §8): the
    per-category cap and the popularity knob, each only when the server sets it, so that an offline
    answer keeps what the server's answers keep."""
    out: dict = {}
    if config.max_per_category is not None:
        out["max_per_category"] = config.max_per_category
    if config.popular_penalty > 0:
        out["popular_penalty"] = config.popular_penalty
    return out


def _counted(users: Iterable[str], bar) -> Iterator[str]:
    for user_id in users:
        yield user_id
        bar.update(1)
