"""POST /v1/devices registers a new device (its token is shown once); DELETE revokes it for good.

Both need the operator key. An id is registered once: a second registration of it, or of a
revoked one, is a 409 (server/api/device_registry.py says why).
"""

from __future__ import annotations

import pydantic
from flask import Blueprint, jsonify

from pocketrank.shared.schemas import refusal

from .auth import check_operator_key, registry
from .contract import DeviceRegistration
from .device_registry import DeviceTaken
from .params import json_object

bp = Blueprint("devices", __name__)


@bp.post("/v1/devices")
def register_device():
    check_operator_key("registering a device")
    body = json_object(DeviceRegistration)
    try:
        asked = DeviceRegistration.model_validate(body)
    except pydantic.ValidationError as exc:
        raise refusal(exc, DeviceRegistration, body) from None
    try:
        device, token = registry().register(asked.device_id, asked.users)
    except DeviceTaken as exc:
        return jsonify(error="conflict", field="device_id", message=str(exc)), 409
    return jsonify(device_id=device.device_id, token=token, users=sorted(device.users)), 201


@bp.delete("/v1/devices/<device_id>")
def revoke_device(device_id: str):
    check_operator_key("revoking a device")
    if not registry().revoke(device_id):
        return jsonify(error="not_found", message=f"no active device {device_id!r}"), 404
    return "", 204
