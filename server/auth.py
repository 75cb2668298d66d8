"""Device authentication and rate limiting for the device-facing endpoints.

Settings come from the environment (documented in the README's settings table):
POCKETRANK_REGISTRATION_KEY guards device registration and revocation (unset:
open registration, for development); POCKETRANK_REQUIRE_DEVICE_TOKEN=1 makes
sync and event upload refuse requests without a valid device token;
POCKETRANK_SYNC_RATE / POCKETRANK_SYNC_BURST bound each device's sync requests.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass

from flask import current_app, g, request

from shared.errors import AuthError

from .devices import Device, DeviceRegistry
from .ratelimit import RateLimiter


@dataclass
class DeviceSettings:
    registration_key: str | None = None
    require_token: bool = False
    sync_rate: float = 5.0  # requests per second per device, sustained
    sync_burst: int = 20

    @classmethod
    def from_env(cls) -> "DeviceSettings":
        env = os.environ
        return cls(
            registration_key=env.get("POCKETRANK_REGISTRATION_KEY") or None,
            require_token=env.get("POCKETRANK_REQUIRE_DEVICE_TOKEN", "0").lower() in ("1", "true", "yes"),
            sync_rate=float(env.get("POCKETRANK_SYNC_RATE", cls.sync_rate)),
            sync_burst=int(env.get("POCKETRANK_SYNC_BURST", cls.sync_burst)),
        )


class RateLimited(Exception):
    def __init__(self, retry_after: float):
        self.retry_after = retry_after


def init_app(app, registry: DeviceRegistry, settings: DeviceSettings | None = None) -> None:
    settings = settings or DeviceSettings.from_env()
    app.extensions["pocketrank.devices"] = registry
    app.extensions["pocketrank.device_settings"] = settings
    app.extensions["pocketrank.sync_limiter"] = RateLimiter(settings.sync_rate, settings.sync_burst)


def settings() -> DeviceSettings:
    return current_app.extensions["pocketrank.device_settings"]


def registry() -> DeviceRegistry:
    return current_app.extensions["pocketrank.devices"]


def check_registration_key() -> None:
    key = settings().registration_key
    given = request.headers.get("X-Registration-Key", "")
    if key is not None and not hmac.compare_digest(key.encode(), given.encode()):
        raise AuthError("registering or revoking a device needs the operator's X-Registration-Key")


def current_device() -> Device | None:
    """The authenticated device, or None when tokens are optional and none was sent."""
    if "device" in g:
        return g.device
    header = request.headers.get("Authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else None
    if token is None and not settings().require_token:
        g.device = None
        return None
    g.device = registry().authenticate(token)
    return g.device


def rate_limit(key: str) -> None:
    wait = current_app.extensions["pocketrank.sync_limiter"].check(key)
    if wait is not None:
        raise RateLimited(wait)
