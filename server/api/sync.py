"""GET /v1/sync and GET /v1/artifacts: a device pulls the bundle for its users.

The answer names the signed manifest and carries, for each of the device's
users, what it needs to reach this version's record: the whole record, a delta
against the record it holds at its cursor, or (unchanged) only this version's
signature over the record it holds. Large artifacts are fetched separately
(with HTTP Range, so they resume) and only when their sha256 differs from what
the device holds. The protocol is docs/sync-protocol.md.
"""

from __future__ import annotations

import base64
import threading
from collections import OrderedDict

from flask import Blueprint, abort, current_app, jsonify, request, send_file

from shared import wire
from shared.errors import IntegrityError, ValidationError
from shared.schemas import check_id
from shared.wire import pack_state, parse_manifest

from ..auth import current_device, rate_limit
from ..stores.base import RecordRow
from .params import int_arg

bp = Blueprint("sync", __name__)


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


@bp.get("/v1/sync")
def get_sync():
    config = current_app.config["POCKETRANK"]
    serving = current_app.extensions["pocketrank"]
    cursor = int_arg("cursor", 0, 0, 2**31 - 1)
    users = _users(config.max_users_per_sync)
    without = _without(users)
    device = current_device()
    if device is not None:
        device.check_users(users)  # a device only ever receives its own users' lists
    rate_limit(device.device_id if device else f"ip:{request.remote_addr}")
    version = serving.bundle_version
    if version == 0:
        abort(503, description="nothing published yet; run `pocketrank publish`")
    etag = f'"v{version}"'
    if (cursor >= version or request.headers.get("If-None-Match") == etag) and not without:
        return "", 304, {"ETag": etag}
    if cursor >= version:  # the device is current: only the users it holds nothing for need an answer
        users = sorted(without)
    serving.refresh()
    manifest_bytes, signature, manifest = _manifest(serving.home.bundle_dir(version), version)
    history_from = int(serving.store.get_meta("records_history_from", "1") or 1)
    if cursor == 0:
        reason = "no cursor: a first sync gets every record whole"
    elif cursor < history_from:
        reason = (f"cursor {cursor} is older than the kept history (versions {history_from}-{version}): "
                  "every record is sent whole")
    else:
        reason = None
    current = serving.store.records_at(version, users)
    sigs = serving.store.record_sigs(version, sorted(current))
    held = serving.store.records_at(cursor, sorted(set(sigs) - without)) if reason is None else {}
    records = {u: _entry(u, current[u], sig, held.get(u), version) for u, sig in sigs.items()}
    resp = jsonify(
        version=version,
        cursor=cursor,
        snapshot=reason is not None,
        snapshot_reason=reason,
        history_from=history_from,
        manifest=base64.b64encode(manifest_bytes).decode(),
        signature=signature,
        records=records,
        unknown_users=[u for u in users if u not in records],
        # Live states: the real-time layer's latest vector for each user, so a
        # device starts from every event the server has folded since publish.
        states={u: base64.b64encode(pack_state(serving.store.user_state(u, serving.dim))).decode()
                for u in users},
        artifacts={k: f"/v1/artifacts/{version}/{a['file']}" for k, a in manifest["artifacts"].items()},
    )
    resp.headers["ETag"] = etag
    return resp


def _entry(user_id: str, row: RecordRow, sig: bytes, held: RecordRow | None, version: int) -> dict:
    """One user's part of the answer: "same", "delta" or "full", each with this version's signature."""
    out = {"sha256": row.sha256.hex(), "sig": base64.b64encode(sig).decode()}
    if held is not None and held.sha256 == row.sha256:
        return {"kind": "same", **out}
    if held is not None:
        delta = _delta(user_id, held, row)
        if len(delta) < len(row.blob):
            return {"kind": "delta", **out, "base_version": held.version, "base_sha256": held.sha256.hex(),
                    "data": base64.b64encode(delta).decode()}
    return {"kind": "full", **out, "data": base64.b64encode(row.blob).decode()}


# Deltas and manifests are computed once per (user, base, version) / version and
# then served from memory: most devices of one publish ask for the same pairs.
_DELTAS: OrderedDict[tuple, bytes] = OrderedDict()
_MANIFESTS: dict[tuple, tuple[bytes, str, dict]] = {}
_LOCK = threading.Lock()
MAX_CACHED_DELTAS = 100_000


def _delta(user_id: str, held: RecordRow, row: RecordRow) -> bytes:
    key = (user_id, held.sha256, row.sha256)
    with _LOCK:
        hit = _DELTAS.get(key)
    if hit is not None:
        return hit
    # The server's own rows: bounded by the general cap, not the device's record cap
    # (a record past that is the device's to refuse, with a clear reason).
    delta = wire.make_delta(wire.decompress(held.blob), wire.decompress(row.blob))
    with _LOCK:
        _DELTAS[key] = delta
        while len(_DELTAS) > MAX_CACHED_DELTAS:
            _DELTAS.popitem(last=False)
    return delta


def _manifest(bundle, version: int) -> tuple[bytes, str, dict]:
    try:  # the file's mtime in the key: a store reset and republished under the same version is reread
        key = (str(bundle), version, (bundle / "manifest.json").stat().st_mtime_ns)
    except FileNotFoundError:
        abort(503, description=f"bundle {version} is missing its manifest; publish again")
    hit = _MANIFESTS.get(key)
    if hit is None:
        body = (bundle / "manifest.json").read_bytes()
        try:
            hit = (body, (bundle / "manifest.sig").read_text().strip(), parse_manifest(body))
        except IntegrityError as exc:  # e.g. a wire v1 bundle published before an upgrade
            abort(503, description=f"bundle {version} cannot be served ({exc}); run `pocketrank publish`")
        with _LOCK:
            if len(_MANIFESTS) > 64:
                _MANIFESTS.clear()
            _MANIFESTS[key] = hit
    return hit


@bp.get("/v1/artifacts/<int:version>/<name>")
def get_artifact(version: int, name: str):
    serving = current_app.extensions["pocketrank"]
    bundle = serving.home.bundle_dir(version)
    try:
        manifest = parse_manifest((bundle / "manifest.json").read_bytes())
    except FileNotFoundError:
        abort(404, description=f"no bundle version {version}")
    files = {a["file"] for a in manifest["artifacts"].values()}
    if name not in files:
        abort(404, description=f"bundle {version} has no artifact {name!r}")
    # conditional=True gives Range / If-Range support: interrupted downloads resume.
    return send_file(bundle / name, mimetype="application/octet-stream", conditional=True,
                     etag=True, max_age=86400)
