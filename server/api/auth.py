"""Who may call what: device tokens for a device's own users, the operator key for everything else.

Settings live in pocketrank.server.config.Config (README's settings table):

- OPERATOR_KEY guards what only the operator may do: register and revoke devices, change the
  catalogue, read the business metrics (/metrics, /v1/metrics/*). It is sent as
  `X-Operator-Key: <key>`, or as `Authorization: Bearer <key>` (what Prometheus can send). Empty
  means open, for development only: the server logs so at start, and refuses to start that way
  when device tokens are required (Config.check_credentials).
- REQUIRE_DEVICE_TOKEN makes every device endpoint (events, sync, artifacts, recommendations, user
  records) refuse a request without a valid device token. A token sent when tokens are optional is
  checked all the same: an unknown or revoked one is a 401, another device's user a 403.
- Rate limits: server/api/ratelimit.py (Flask-Limiter), per device token.
"""

from __future__ import annotations

import hmac
import logging

from flask import current_app, g, request

from pocketrank.shared.errors import AuthError

from .device_registry import Device, DeviceRegistry

log = logging.getLogger(__name__)


def init_app(app, registry: DeviceRegistry) -> None:
    config = app.config["POCKETRANK"]
    # A Config built in code has not been through from_env's checks: the credential rule holds for it too.
    config.check_credentials()
    if not config.operator_key:
        log.warning("POCKETRANK_OPERATOR_KEY is empty: device registration, catalogue writes and the business "
                    "metrics are open to anyone who can reach this server (development only)")
    app.extensions["pocketrank.devices"] = registry


def settings():
    return current_app.config["POCKETRANK"]


def registry() -> DeviceRegistry:
    return current_app.extensions["pocketrank.devices"]


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    return header[7:].strip() if header[:7].lower() == "bearer " else None


def check_operator_key(action: str) -> None:
    key = settings().operator_key
    if not key:
        return  # development: open (a server requiring device tokens never starts without a key)
    given = request.headers.get("X-Operator-Key")
    if given is None:
        given = _bearer() or ""
    if not hmac.compare_digest(key.encode(), given.encode()):
        raise AuthError(f"{action} needs the operator's key in the X-Operator-Key header "
                        "(or as 'Authorization: Bearer <key>')")


def current_device() -> Device | None:
    """The authenticated device, or None when tokens are optional and none was sent."""
    if "device" in g:
        return g.device
    token = _bearer()
    if token is None and not settings().require_device_token:
        g.device = None
        return None
    g.device = registry().authenticate(token)
    return g.device


def authorize_users(users: list[str]) -> Device | None:
    """The calling device when it may see every one of `users` (401 without a valid token where one is
    required, 403 for another device's user); None for an anonymous call where tokens are optional."""
    device = current_device()
    if device is not None:
        device.check_users(users)
    return device

