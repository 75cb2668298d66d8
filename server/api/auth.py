"""Device authentication and the operator key (rate limits: server/api/ratelimit.py).

Settings live in server.config.Config (README's settings table): OPERATOR_KEY
guards device registration and revocation and catalogue writes (empty: open,
for development); REQUIRE_DEVICE_TOKEN makes sync and event upload refuse
requests without a valid device token.
"""

from __future__ import annotations

import hmac

from flask import current_app, g, request

from shared.errors import AuthError

from .device_registry import Device, DeviceRegistry


def init_app(app, registry: DeviceRegistry) -> None:
    app.extensions["pocketrank.devices"] = registry


def settings():
    return current_app.config["POCKETRANK"]


def registry() -> DeviceRegistry:
    return current_app.extensions["pocketrank.devices"]


def check_operator_key(action: str) -> None:
    key = settings().operator_key
    given = request.headers.get("X-Operator-Key", "")
    if key and not hmac.compare_digest(key.encode(), given.encode()):
        raise AuthError(f"{action} needs the operator's key in the X-Operator-Key header")


def current_device() -> Device | None:
    """The authenticated device, or None when tokens are optional and none was sent."""
    if "device" in g:
        return g.device
    header = request.headers.get("Authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else None
    if token is None and not settings().require_device_token:
        g.device = None
        return None
    g.device = registry().authenticate(token)
    return g.device

