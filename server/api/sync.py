"""GET /v1/sync and GET /v1/artifacts: a device pulls the bundle for its users.

The answer names the signed manifest and carries the device's users' records;
large artifacts are fetched separately (with HTTP Range, so they resume) and
only when their sha256 differs from what the device holds.
"""

from __future__ import annotations

import base64

from flask import Blueprint, abort, current_app, jsonify, request, send_file

from shared.errors import ValidationError
from shared.schemas import check_id
from shared.wire import pack_state, parse_manifest

from ..auth import current_device, rate_limit
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


@bp.get("/v1/sync")
def get_sync():
    config = current_app.config["POCKETRANK"]
    serving = current_app.extensions["pocketrank"]
    cursor = int_arg("cursor", 0, 0, 2**31 - 1)
    users = _users(config.max_users_per_sync)
    device = current_device()
    if device is not None:
        device.check_users(users)  # a device only ever receives its own users' lists
    rate_limit(device.device_id if device else f"ip:{request.remote_addr}")
    version = serving.bundle_version
    if version == 0:
        abort(503, description="nothing published yet; run `pocketrank publish`")
    etag = f'"v{version}"'
    if cursor >= version or request.headers.get("If-None-Match") == etag:
        return "", 304, {"ETag": etag}
    serving.refresh()
    bundle = serving.home.bundle_dir(version)
    manifest_bytes = (bundle / "manifest.json").read_bytes()
    manifest = parse_manifest(manifest_bytes)
    records = serving.store.records(version, users)
    # Only what changed: a record byte-identical to the one the device holds
    # (the cursor's version) is not sent again; the device checks its held
    # record against the new signed user index and carries it forward.
    unchanged = []
    if cursor > 0 and records:
        held = serving.store.records(cursor, sorted(records))
        unchanged = sorted(u for u, blob in held.items() if records.get(u) == blob)
        for u in unchanged:
            del records[u]
    resp = jsonify(
        version=version,
        cursor=cursor,
        manifest=base64.b64encode(manifest_bytes).decode(),
        signature=(bundle / "manifest.sig").read_text().strip(),
        records={u: base64.b64encode(b).decode() for u, b in records.items()},
        unknown_users=[u for u in users if u not in records and u not in unchanged],
        unchanged=unchanged,
        # Live states: the real-time layer's latest vector for each user, so a
        # device starts from every event the server has folded since publish.
        states={u: base64.b64encode(pack_state(serving.store.user_state(u, serving.dim))).decode()
                for u in users},
        artifacts={k: f"/v1/artifacts/{version}/{a['file']}" for k, a in manifest["artifacts"].items()},
    )
    resp.headers["ETag"] = etag
    return resp


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
