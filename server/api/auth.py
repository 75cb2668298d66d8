"""Device authentication, the operator key, and rate limiting.

Settings live in server.config.Config (README's settings table): OPERATOR_KEY
guards device registration and revocation and catalogue writes (empty: open,
for development); REQUIRE_DEVICE_TOKEN makes sync and event upload refuse
requests without a valid device token; SYNC_RATE / SYNC_BURST bound each
device's sync requests.
"""

from __future__ import annotations

import hmac

from flask import current_app, g, request

from shared.errors import AuthError

from .device_registry import Device, DeviceRegistry
from .ratelimit import RateLimiter


class RateLimited(Exception):
    def __init__(self, retry_after: float):
        self.retry_after = retry_after


def init_app(app, registry: DeviceRegistry) -> None:
    config = app.config["POCKETRANK"]
    app.extensions["pocketrank.devices"] = registry
    app.extensions["pocketrank.sync_limiter"] = RateLimiter(config.sync_rate, config.sync_burst)


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


def rate_limit(key: str) -> None:
    wait = current_app.extensions["pocketrank.sync_limiter"].check(key)
    if wait is not None:
        raise RateLimited(wait)
