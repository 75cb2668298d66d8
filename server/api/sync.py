"""GET /v1/sync and GET /v1/artifacts: a device pulls the bundle for its users.

This blueprint parses and checks the request (users, cursor, items, model; the device's token; its rate
limit is set in server/api/ratelimit.py) and sends the answer that server/bundle/sync_answer.py computes:
the protocol is explained there and in docs/sync-protocol.md. The artifacts are served with HTTP Range, so downloads resume.
"""

from __future__ import annotations

from flask import Blueprint, Response, abort, current_app, request, send_file

from pocketrank.shared.errors import BundleUnavailable, ValidationError
from pocketrank.shared.wire import parse_manifest

from ..bundle import variants
from ..bundle.sync_answer import SyncRequest, answer
from .auth import current_device
from .contract import MAX_LACKING_ITEMS, query_models
from .params import query

bp = Blueprint("sync", __name__)


def _without(q, users: list[str]) -> frozenset[str]:
    """Listed users the device holds no record for at the cursor: answered whole, never with 304."""
    without = frozenset(q.without.split(",")) if q.without else frozenset()
    if not without <= set(users):  # a rule between two parameters, which the document can only say in words
        raise ValidationError("without", "may only name users that are also in users")
    return without


@bp.get("/v1/sync")
def get_sync():
    config = current_app.config["POCKETRANK"]
    q = query(query_models(config)["sync"])  # users, items and model are checked whole by their patterns
    users = sorted(set(q.users.split(",")))
    lacking = tuple(sorted({int(i) for i in q.items.split(",")})) if q.items else ()
    if len(lacking) > MAX_LACKING_ITEMS:
        raise ValidationError("items", f"at most {MAX_LACKING_ITEMS} item ids per sync")
    req = SyncRequest(q.cursor, users, _without(q, users), lacking, q.model, request.headers.get("If-None-Match"))
    device = current_device()
    if device is not None:
        device.check_users(users)  # a device only ever receives its own users' lists
    try:
        got = answer(current_app.extensions["pocketrank"], req)
    except BundleUnavailable as exc:  # nothing published, or a bundle that cannot be served: the operator's to fix
        abort(503, description=str(exc))
    if got.status == 304:
        return "", 304, got.headers
    return Response(got.body, got.status, got.headers, mimetype=got.mimetype)


@bp.get("/v1/artifacts/<int:version>/<name>")
def get_artifact(version: int, name: str):
    current_device()  # where tokens are required, the model and the catalogue's vectors are for devices only
    return _artifact(current_app.extensions["pocketrank"].home.bundle_dir(version), version, name)


@bp.get("/v1/artifacts/<int:version>/canary/<model>/<name>")
def get_variant_artifact(version: int, model: str, name: str):
    """An artifact of bundle `version`'s canary variant for `model` (server/bundle/variants.py)."""
    current_device()
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
