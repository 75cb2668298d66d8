"""GET /v1/sync and GET /v1/artifacts: a device pulls the bundle for its users.

The answer names the signed manifest and carries, for each of the device's
users, what it needs to reach this version's record: the whole record, a delta
against the record it holds at its cursor, or (unchanged) only this version's
signature over the record it holds. Item vectors and metadata come with it, one
signed entry per item, only for the items of the users' lists (and the popular
list) that the device does not hold at their current revision. The model files are fetched separately
(with HTTP Range, so they resume) and only when their sha256 differs from what
the device holds. The protocol is docs/sync-protocol.md.

While a canary runs, a bundle version may have canary variants (server/bundle/variants.py): the answer's
manifest, item entries and live states are those of the variant chosen for the listed users, and the
device says which model it holds (`model=`), so a switch between variants of one version (a canary
starting, a rollback, a promotion) reaches it without waiting for the next publish.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass

from flask import Blueprint, Response, abort, current_app, request, send_file

from shared import wire
from shared.errors import IntegrityError, PocketrankError, ValidationError
from shared.schemas import check_id
from shared.wire import pack_state, parse_manifest

from ..bundle import item_entries, variants
from .auth import current_device, rate_limit
from ..stores.base import RECORDS_EPOCH, RecordRow
from .params import int_arg

bp = Blueprint("sync", __name__)
log = logging.getLogger(__name__)


def _users(limit: int) -> list[str]:
    raw = request.args.get("users", "")
    users = [check_id("users", u) for u in raw.split(",") if u]
    if not users:
        raise ValidationError("users", "list at least one user id, comma-separated")
    if len(users) > limit:
        raise ValidationError("users", f"at most {limit} users per sync")
    return sorted(set(users))


def _without(users: list[str]) -> set[str]:
    """Listed users the device holds no record for at the cursor: answered whole, never with 304."""
    raw = request.args.get("without", "")
    without = {check_id("without", u) for u in raw.split(",") if u}
    if not without <= set(users):
        raise ValidationError("without", "may only name users that are also in users")
    return without


# Item ids a device may name as lacking in one request (it asks again for more).
MAX_LACKING_ITEMS = 2000


def _lacking() -> list[int]:
    """Items the device says it lacks (a damaged copy, or entries held under an older model): sent whatever the cursor."""
    raw = request.args.get("items", "")
    try:
        ids = sorted({int(i) for i in raw.split(",") if i})
    except ValueError:
        raise ValidationError("items", "must be comma-separated integer item ids") from None
    if len(ids) > MAX_LACKING_ITEMS:
        raise ValidationError("items", f"at most {MAX_LACKING_ITEMS} item ids per sync")
    if ids and (ids[0] < -(2**31) or ids[-1] >= 2**31):
        raise ValidationError("items", "item ids must fit in a signed 32-bit integer")
    return ids


def _held_model() -> str | None:
    """The model the device holds (`model=`); None when it does not say (then: its cursor's bundle's live one)."""
    raw = request.args.get("model")
    return None if raw is None else variants.check_model("model", raw)


def snapshot_reason(cursor: int, history_from: int, version: int) -> str | None:
    """Why this answer is a snapshot (every record whole), or None when deltas against the cursor can go."""
    if cursor == 0:
        return "no cursor: a first sync gets every record whole"
    if cursor < history_from:
        return (f"cursor {cursor} is older than the kept history (versions {history_from}-{version}): "
                "every record is sent whole")
    return None


@bp.get("/v1/sync")
def get_sync():
    config = current_app.config["POCKETRANK"]
    serving = current_app.extensions["pocketrank"]
    cursor = int_arg("cursor", 0, 0, 2**31 - 1)
    users = _users(config.max_users_per_sync)
    without = _without(users)
    lacking = _lacking()
    held_model = _held_model()
    device = current_device()
    if device is not None:
        device.check_users(users)  # a device only ever receives its own users' lists
    rate_limit(device.device_id if device else f"ip:{request.remote_addr}")
    version = serving.bundle_version
    if version == 0:
        abort(503, description="nothing published yet; run `pocketrank publish`")
    # The variant: the canary's when a rollout runs, this version has its variant, and every listed user
    # hashes into it (or the variant of the registry's live model, after a promotion); else the live bundle.
    bundle = serving.home.bundle_dir(version)
    mkey, pre = _manifest(bundle, version)
    vdir, variant_model, live_model = bundle, None, pre.model_version
    model = variants.choose(serving.routing(), users, live_model)
    if model != live_model and variants.MODEL_RE.fullmatch(model):
        # One read of the variant's files, no separate existence check: a rebuild (build_variant swaps
        # directories) or a removal at any moment before it leaves no variant, and the live bundle answers.
        got = _manifest(variants.variant_dir(bundle, model), version, model, missing_ok=True)
        if got is not None:
            vdir, variant_model = variants.variant_dir(bundle, model), model
            mkey, pre = got
    etag = variants.etag(version, variant_model)
    cursor_facts = None  # the cursor's bundle's (popular, model), read at most once per request
    if held_model is None and cursor > 0:  # a device that does not name its model holds its cursor's live one
        if cursor >= version:
            held_model = live_model
        else:
            cursor_facts = _bundle_facts(serving.home, cursor)
            held_model = cursor_facts[1]
    # The device holds another model than this answer's (a variant switch, or a new live model): every item
    # entry its lists and popular reference comes again, under this answer's model; its records do not
    # depend on the model and are answered against its cursor as usual.
    switch = held_model is not None and held_model != pre.model_version
    if ((cursor >= version or request.headers.get("If-None-Match") in (etag, f'"v{version}"'))
            and not without and not lacking and not switch):
        return "", 304, {"ETag": etag}
    if cursor >= version and without and not switch:  # the device is current: only the users it holds nothing for
        users = sorted(without)
    items = _items(vdir, mkey)
    history_from = int(serving.store.get_meta("records_history_from", "1") or 1)
    reason = snapshot_reason(cursor, history_from, version)
    cursors = {u: 0 if reason is not None or u in without else min(cursor, version) for u in users}
    frags = _entries(serving.store, (mkey, serving.store.get_meta(RECORDS_EPOCH, "")), version, users, cursors,
                     items.entries, every_item=switch)
    records = [f[0] for f in frags.values() if f is not None]
    # Item entries: each listed user's candidates the device lacks at this revision, the popular list's
    # likewise (against the popular list of the cursor's bundle), and the items it names as lacking.
    send = {i for f in frags.values() if f is not None for i in f[1]}
    pop_cursor = 0 if reason is not None or switch else min(cursor, version)
    pop_facts = cursor_facts if cursor_facts is not None and pop_cursor == cursor else _bundle_facts(serving.home,
                                                                                                       pop_cursor)
    send.update(item_entries.select(items.entries, pre.popular, pop_facts[0], pop_cursor, lacking))
    # Live states: the real-time layer's latest vector for each user, so a
    # device starts from every event the server has folded since publish.
    states = _states(serving, users, pre.model_version)
    # The answer is assembled from pre-encoded JSON (sorted keys, no spaces): the records' and the
    # manifest's parts are encoded once per version, not per request.
    body = b"".join([
        b'{"artifacts":', pre.artifacts, b',"cursor":', str(cursor).encode(),
        b',"history_from":', str(history_from).encode(),
        b',"items":{', b",".join(items.frags[i] for i in sorted(send)), b'}',
        b',"manifest":', pre.manifest,
        b',"records":{', b",".join(records), b'},"signature":', pre.signature,
        b',"snapshot":', b"false" if reason is None else b"true",
        b',"snapshot_reason":', _dumps(reason), b',"states":', _dumps(states),
        b',"unknown_users":', _dumps([u for u in users if frags[u] is None]),
        b',"version":', str(version).encode(), b"}",
    ])
    return Response(body, 200, {"ETag": etag}, mimetype="application/json")


def _states(serving, users: list[str], model: str) -> dict[str, str]:
    """Each user's live state (PRS1, base64) in `model`'s space. The store's states are its current model's;
    for another model (a canary variant), the user's recent events folded with that model's item vectors,
    as the server ranks a canary user (server/rankers.VersionRanker)."""
    cat = serving.catalogues.get()
    current = serving.catalogues.model_version
    vr = None
    if current and model != current:
        try:
            vr = serving.rankers.get(model, cat, False)
        except PocketrankError as exc:  # its files are gone: the store's states, as before variants
            log.warning("no item vectors of model %s here (%s); sync answers carry the store's states", model, exc)
    records = serving.store.user_records(users, cat.dim)  # one read for all the listed users
    return {u: base64.b64encode(pack_state(records[u].state if vr is None else vr.state(records[u]))).decode()
            for u in users}


def _dumps(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _entry(row: RecordRow, sig: bytes, held: RecordRow | None, raw: bytes | None, held_raw: bytes | None) -> dict:
    """One user's part of the answer: "same", "delta" or "full", each with this version's signature.
    `raw`, `held_raw`: the two records decompressed (None when one does not decode: then no delta)."""
    out = {"sha256": row.sha256.hex(), "sig": base64.b64encode(sig).decode()}
    if held is not None and held.sha256 == row.sha256:
        return {"kind": "same", **out}
    if held is not None and raw is not None and held_raw is not None:
        delta = wire.make_delta(held_raw, raw)
        if len(delta) < len(row.blob):
            return {"kind": "delta", **out, "base_version": held.version, "base_sha256": held.sha256.hex(),
                    "data": base64.b64encode(delta).decode()}
    return {"kind": "full", **out, "data": base64.b64encode(row.blob).decode()}


# Each user's answer for a (version, cursor) pair, as its JSON fragment `"user":{...}` (None: no
# record at this version), is computed once, then served from memory: every device of one publish
# asks for the same pairs, and the delta (zstd) work is the costly part. Keyed by the manifest file
# (a store reset and republished under the same version is not confused with the old one) and the
# store's records_epoch (any write to the record log, e.g. a republished record, starts afresh).
_ENTRIES: OrderedDict[tuple, tuple[bytes, tuple[int, ...]] | None] = OrderedDict()
_MANIFESTS: dict[tuple, "_Manifest"] = {}
_LOCK = threading.Lock()
# First in, first out. A full entry is ~850 B of JSON (a 480 B record in base64, sha256, signature), a
# delta's ~350 B: 100k users' snapshot and delta answers take ~120 MB per worker.
MAX_CACHED_ENTRIES = 200_000


def _entries(store, key: tuple, version: int, users: list[str], cursors: dict[str, int],
             items: dict, every_item: bool = False) -> dict[str, tuple[bytes, tuple[int, ...]] | None]:
    """Each user's fragment and the item ids to send with it: from the cache, else built from the store (and cached).
    `every_item`: the device holds entries of another model, so every item of the list goes."""
    out: dict[str, tuple[bytes, tuple[int, ...]] | None] = {}
    missing = []
    with _LOCK:
        for u in users:
            k = (key, u, cursors[u], every_item)
            if k in _ENTRIES:
                out[u] = _ENTRIES[k]
            else:
                missing.append(u)
    if not missing:
        return out
    current = store.records_at(version, missing)
    sigs = store.record_sigs(version, sorted(current))
    by_cursor: dict[int, list[str]] = {}
    for u in sigs:
        by_cursor.setdefault(cursors[u], []).append(u)
    held: dict[str, RecordRow] = {}
    for c, us in by_cursor.items():
        if c:
            held.update(store.records_at(c, us))
    built = {}
    for u in missing:
        if u not in sigs:
            built[u] = None
            continue
        raw, held_raw = _raw(current[u]), _raw(held[u]) if u in held else None  # each decompressed once
        built[u] = (_dumps(u) + b":" + _dumps(_entry(current[u], sigs[u], held.get(u), raw, held_raw)),
                    tuple(item_entries.select(items, _ids(raw),
                                              _ids(held_raw) if u in held and not every_item else None,
                                              cursors[u] if u in held and not every_item else 0)))
    with _LOCK:
        for u, frag in built.items():
            _ENTRIES[(key, u, cursors[u], every_item)] = frag
        while len(_ENTRIES) > MAX_CACHED_ENTRIES:
            _ENTRIES.popitem(last=False)
    out.update(built)
    return out


def _raw(row: RecordRow) -> bytes | None:
    """A stored record decompressed; None when it does not decode. The server's own rows: bounded by
    the general cap, not the device's record cap (a record past that is the device's to refuse)."""
    try:
        return wire.decompress(row.blob)
    except IntegrityError:
        return None


def _ids(raw: bytes | None) -> list[int]:
    """A record's item ids; none when it does not decode (the device refuses such a record anyway)."""
    if raw is None:
        return []
    try:
        return wire.unpack_candidates_raw(raw)[0].tolist()
    except IntegrityError:
        return []


@dataclass(frozen=True)
class _Manifest:
    """A version's manifest, parsed, and its parts of the answer already JSON-encoded."""
    manifest: bytes  # JSON string: base64 of the manifest file
    signature: bytes  # JSON string
    artifacts: bytes  # JSON object: name -> URL
    popular: tuple[int, ...]  # the signed cold-start list
    model_version: str


@dataclass(frozen=True)
class _Items:
    """A version's item entries and each one's JSON fragment `"id":{"data":...,"sig":...}`, encoded once."""
    entries: dict
    frags: dict


_ITEMS: dict[tuple, _Items] = {}


def _items(bundle, key: tuple) -> _Items:
    hit = _ITEMS.get(key)
    if hit is None:
        entries = item_entries.load(bundle / item_entries.ITEMS_FILE)
        frags = {i: _dumps(str(i)) + b":" + _dumps({"data": base64.b64encode(e.raw).decode(),
                                                     "sig": base64.b64encode(e.sig).decode()})
                 for i, e in entries.items()}
        hit = _Items(entries, frags)
        with _LOCK:
            if len(_ITEMS) > 4:
                _ITEMS.clear()
            _ITEMS[key] = hit
    return hit


_FACTS: dict[tuple, tuple[list[int] | None, str | None]] = {}


def _bundle_facts(home, version: int) -> tuple[list[int] | None, str | None]:
    """(popular list, model version) of an older bundle's live manifest; (None, None) when it is gone (every
    popular item is sent; the device's model is taken as unknown, so its entries are selected as before).

    Read once per bundle file (its mtime in the key, as for manifests), not per request."""
    if version <= 0:
        return None, None
    path = home.bundle_dir(version) / "manifest.json"
    try:
        key = (str(path), path.stat().st_mtime_ns)
    except OSError:
        return None, None
    if key not in _FACTS:
        try:
            manifest = json.loads(path.read_bytes())
            popular, model = manifest.get("popular"), manifest.get("model_version")
        except (OSError, ValueError, AttributeError):
            popular, model = None, None
        with _LOCK:
            if len(_FACTS) > 64:
                _FACTS.clear()
            _FACTS[key] = (popular if isinstance(popular, list) else None, model if isinstance(model, str) else None)
    return _FACTS[key]


def _manifest(bundle, version: int, variant_model: str | None = None,
              missing_ok: bool = False) -> tuple[tuple, _Manifest] | None:
    """A bundle's (or, with `variant_model`, its canary variant's) manifest, parsed and encoded once per file.

    `missing_ok`: None when its files are not there (a variant being rebuilt or removed: the caller answers
    with the live bundle), instead of a 503."""
    where = str(bundle)
    try:  # the file's mtime in the key: a store reset and republished under the same version is reread
        key = (where, version, os.stat(where + "/manifest.json").st_mtime_ns)
    except FileNotFoundError:
        if missing_ok:
            return None
        abort(503, description=f"bundle {version} is missing its manifest; publish again")
    hit = _MANIFESTS.get(key)
    if hit is None:
        try:  # a variant directory swapped or removed since the stat above: as if it were not there
            body = (bundle / "manifest.json").read_bytes()
            sig = (bundle / "manifest.sig").read_text().strip()
        except FileNotFoundError:
            if missing_ok:
                return None
            raise
        try:
            manifest = parse_manifest(body)
        except IntegrityError as exc:  # e.g. a wire v2 bundle published before an upgrade
            abort(503, description=f"bundle {version} cannot be served ({exc}); run `pocketrank publish`")
        prefix = f"/v1/artifacts/{version}/" + (f"canary/{variant_model}/" if variant_model else "")
        hit = _Manifest(_dumps(base64.b64encode(body).decode()), _dumps(sig),
                        _dumps({k: prefix + a["file"] for k, a in manifest["artifacts"].items()}),
                        tuple(manifest["popular"]), str(manifest["model_version"]))
        with _LOCK:
            if len(_MANIFESTS) > 64:
                _MANIFESTS.clear()
            _MANIFESTS[key] = hit
    return key, hit


@bp.get("/v1/artifacts/<int:version>/<name>")
def get_artifact(version: int, name: str):
    return _artifact(current_app.extensions["pocketrank"].home.bundle_dir(version), version, name)


@bp.get("/v1/artifacts/<int:version>/canary/<model>/<name>")
def get_variant_artifact(version: int, model: str, name: str):
    """An artifact of bundle `version`'s canary variant for `model` (server/bundle/variants.py)."""
    variants.check_model("model", model)
    bundle = current_app.extensions["pocketrank"].home.bundle_dir(version)
    return _artifact(variants.variant_dir(bundle, model), version, name, f" canary variant {model}")


def _artifact(bundle, version: int, name: str, what: str = ""):
    try:
        manifest = parse_manifest((bundle / "manifest.json").read_bytes())
    except FileNotFoundError:
        abort(404, description=f"no bundle version {version}{what}")
    files = {a["file"] for a in manifest["artifacts"].values()}
    if name not in files:
        abort(404, description=f"bundle {version}{what} has no artifact {name!r}")
    # conditional=True gives Range / If-Range support: interrupted downloads resume.
    return send_file(bundle / name, mimetype="application/octet-stream", conditional=True,
                     etag=True, max_age=86400)
