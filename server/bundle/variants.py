"""Canary variants of a bundle: the canary model reaches canary users' devices through the sync manifest.

A bundle version V may have, beside its live manifest, one **variant** per canary model M in
`bundles/V/canary/M/`: its own signed manifest (the same `version` V and popular list, `model_version`
M, M's `ranker` and `encoder`, M's `embedding_dim`, and a signed `rollout: {rollout_id, share}`), and its
own `items.pri` (PRI2 entries signed over M, vectors from M). The candidate records (PRC2) are shared:
they carry no model and are signed over (version, user, sha256), so a device reranks the live lists with
the model its manifest names. That is deliberate: during a canary, candidate generation stays the live
model's on the server; what a canary device gets is the canary's reranker, encoder and item vectors.

Who gets which variant is `choose()`: the registry's route for every listed user (the same
`in_canary` hash the serving layer uses); a request whose users do not all route alike gets the live
variant. `build_variant()` writes one; `pocketrank publish` calls it while a rollout runs and `pocketrank
canary start` for the current bundle. Rollback and promotion build nothing: the sync endpoint stops
choosing the variant (rollback: the live one serves) or chooses it for everyone (promotion: the variant
of the now-live model serves until the next publish builds the live bundle from it).
Protocol: docs/sync-protocol.md, "Canary variants".

    from pocketrank.server.home import Home
    from pocketrank.server.bundle.variants import build_variant
    build_variant(Home("var/home"), 7, "m-next", {"rollout_id": "m-next-canary-1", "share": 0.05})
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

from pocketrank.shared import wire
from pocketrank.shared.errors import ValidationError

from ..home import Home
from ..online.catalogue import Catalogue, load_catalogue
from ..online.versions import catalogue_for, version_vectors
from ..release.registry import Registry
from . import item_entries
from .model_artifacts import (
    MODEL_FILES,
    load_signer,
    manifest_artifacts,
    model_artifacts,
    model_section,
    write_bundle_dir,
)

log = logging.getLogger(__name__)

VARIANTS_DIR = "canary"
# What a device may name in `model=` and what a variant directory may be called: no '/', no leading '.'.
MODEL_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:+@-]{0,254}")


def check_model(field: str, value: Any) -> str:
    """A model version as a device names it (or ValidationError, a 400)."""
    if not isinstance(value, str) or not MODEL_RE.fullmatch(value):
        raise ValidationError(field, "must be a model version: 1-255 characters of A-Z a-z 0-9 _ . : + @ -, "
                                     "not starting with . + : @ or -")
    return value


def variant_dir(bundle: Path, model_version: str) -> Path:
    return Path(bundle) / VARIANTS_DIR / model_version


def exists(bundle: Path, model_version: str) -> bool:
    return MODEL_RE.fullmatch(model_version) is not None and (variant_dir(bundle, model_version) /
                                                              "manifest.json").exists()


def choose(data: dict, users: Iterable[str], live_model: str) -> str:
    """The model version a sync request's variant is for (pure: the registry as loaded, the listed users,
    the live bundle's model).

    Every user routed as the serving layer routes them (Registry.route: the rollout's canary if the
    user hashes into its share, else the registry's live version, else `live_model`); when they do
    not all route to the canary, the live version: a device holds one model for all its users, and a
    canary user on a mixed device is better served the live model than a non-canary user the canary."""
    routes = {Registry.route(data, u, live_model) for u in users}
    # One route for every user: it; users routed apart, or none listed: the live version.
    # Not None: route and live_of both fall back to live_model, a str.
    return cast(str, routes.pop() if len(routes) == 1 else Registry.live_of(data, live_model))


def etag(version: int, variant_model: str | None) -> str:
    """The sync answer's ETag: `"v<V>"` for the live variant (as before variants), `"v<V>-<model>"` for a canary one."""
    return f'"v{version}"' if variant_model is None else f'"v{version}-{variant_model}"'


def _kept_entries(dirs: Iterable[Path], model_version: str) -> tuple[dict, str | None]:
    """Entries a new build for `model_version` may keep (same bytes, same model: same signature and `changed`):
    those of the first of `dirs` (bundle or variant directories) whose manifest names `model_version` and
    that has an item file. ({}, None) when none: every entry counts as changed (item_entries.build_entries
    keeps nothing of another model's either)."""
    for d in dirs:
        try:
            model = json.loads((d / "manifest.json").read_bytes()).get("model_version")
        except (OSError, ValueError):
            continue
        if model == model_version and (d / item_entries.ITEMS_FILE).exists():
            return item_entries.load(d / item_entries.ITEMS_FILE), model
    return {}, None


def previous_live_entries(home: Home, version: int, model_version: str) -> tuple[dict, str | None]:
    """For `pocketrank publish`: the entries the live bundle `version` may keep. The previous live bundle's
    (as before variants), or, when the model changed (a promoted canary), the previous bundle's variant of
    the new model: devices that held that variant then keep their entries (a device that held another
    model is sent every entry anyway, see server/bundle/sync_answer.py)."""
    prev = home.bundle_dir(version - 1)
    return _kept_entries([prev, variant_dir(prev, model_version)], model_version)


def build_variant(home: Home, bundle_version: int, model_version: str, rollout: dict, store=None,
                  signer=None, base: Catalogue | None = None, meta: dict | None = None) -> dict:
    """Write (or rewrite) bundle `bundle_version`'s canary variant for `model_version`; returns a summary.

    The live bundle must exist. Written into a temporary directory and moved into place, so a sync never
    reads half a variant (during the swap it finds none and answers live). `base`, `meta`: the store's
    catalogue and item metadata when the caller has them already (publish), else read from the store.
    The model's item_vectors.npz is not written here: `canary start` did (rollout.start)."""
    check_model("version", model_version)
    bundle = home.bundle_dir(bundle_version)
    try:
        live = wire.parse_manifest((bundle / "manifest.json").read_bytes())
    except FileNotFoundError:
        raise ValidationError("bundle", f"bundle {bundle_version} has no manifest; run `pocketrank publish`") from None
    if live["model_version"] == model_version:
        raise ValidationError("version", f"{model_version} is bundle {bundle_version}'s live model already")
    model_dir = home.model_dir(model_version)
    missing = [f for f in MODEL_FILES.values() if not (model_dir / f).exists()]
    if missing:
        raise ValidationError("version", f"{model_dir} has no {', '.join(missing)}; run `pocketrank export` for it")
    export = json.loads((model_dir / "export.json").read_text()) if (model_dir / "export.json").exists() else {}
    if base is None or meta is None:
        own_store = store is None
        store = home.store() if own_store else store
        try:
            base = load_catalogue(store) if base is None else base
            meta = {it.item_id: it.to_dict() for it in store.items()} if meta is None else meta
        finally:
            if own_store:
                store.close()
    ids, vecs = version_vectors(model_dir)
    catalogue = catalogue_for(base, ids, vecs)
    if signer is None:
        signer = load_signer(home)
    # The variant already built at this version, else the previous bundle's variant of the model, else the
    # previous live bundle if it ran this model.
    previous, prev_model = _kept_entries([variant_dir(home.bundle_dir(bundle_version), model_version),
                                          variant_dir(home.bundle_dir(bundle_version - 1), model_version),
                                          home.bundle_dir(bundle_version - 1)], model_version)
    entries = item_entries.build_entries(catalogue.ids, catalogue.vectors, meta, model_version, bundle_version,
                                         signer.sign, previous, prev_model)
    artifacts = model_artifacts(model_dir)
    manifest = {k: v for k, v in live.items() if k not in ("model",)}
    manifest.update({
        "created_at": time.time(),  # expires_at stays the live bundle's: the version expires as one
        "model_version": model_version,
        "embedding_dim": int(catalogue.vectors.shape[1]),
        "items": {"count": len(entries), "precision": "f16"},
        "artifacts": manifest_artifacts(artifacts),
        # Signed, so a device (or an auditor) can tell a canary variant from a live manifest; the share is the
        # one at build time: routing follows the registry, which may have widened it since.
        "rollout": {"rollout_id": str(rollout["rollout_id"]), "share": float(rollout["share"])},
    })
    if export:
        manifest["model"] = model_section(export)
    body = wire.canonical_json(manifest)
    out = variant_dir(bundle, model_version)
    write_bundle_dir(out, entries, artifacts, body, signer.sign(body))
    changed = sum(1 for e in entries.values() if e.changed == bundle_version)
    log.info("bundle %d: canary variant %s built (%d item entries, %d changed)", bundle_version, model_version,
             len(entries), changed)
    return {"bundle_version": bundle_version, "model_version": model_version, "rollout_id": rollout["rollout_id"],
            "items": len(entries), "items_changed": changed, "path": str(out)}


def build_for_rollout(home: Home, bundle_version: int, rollout: dict | None = None, store=None,
                      signer=None, base: Catalogue | None = None, meta: dict | None = None) -> dict | None:
    """The rollout's (default: the registry's running one) variant of `bundle_version`, or None when no
    rollout runs. A failure is logged and reported, never raised: the server-side canary and the live
    bundle stand without it (canary users' devices then keep the live model)."""
    try:
        rollout = rollout if rollout is not None else Registry(home.root).rollout()
    except ValueError as exc:  # a hand-edited, broken registry: publishing goes on, the variant waits
        log.error("the registry is not valid JSON (%s); no canary variant built for bundle %d", exc, bundle_version)
        return {"bundle_version": bundle_version, "status": "failed", "error": f"registry: {exc}"}
    if not rollout or bundle_version <= 0:
        return None
    try:
        return build_variant(home, bundle_version, rollout["version"], rollout, store=store, signer=signer,
                             base=base, meta=meta)
    except Exception as exc:  # noqa: BLE001 - reported to the caller (publish, canary start), logged with its trace
        log.exception("building bundle %d's canary variant of %s failed", bundle_version, rollout.get("version"))
        return {"bundle_version": bundle_version, "model_version": rollout.get("version"), "status": "failed",
                "error": f"{type(exc).__name__}: {exc}"}
