"""Rate limits on every endpoint (Flask-Limiter): per device token, per address only for anonymous calls.

Each limit is a sliding window; past one the answer is 429 with Retry-After
(whole seconds), which the SDK honours (edge_runtime/transport.py, policy.py):

- every request of a device (a valid device token), whatever the endpoint:
  `request_burst` per `request_burst / request_rate` seconds (600 per 30 s, 20/s);
- every request of an address without a token: `address_burst` per
  `address_burst / address_rate` seconds (6,000 per 60 s, 100/s). An address
  stands for many clients (a carrier's NAT, an office, the marketplace's own
  backend asking for its web users), so it gets more than one device;
- GET /v1/sync on top: `sync_burst` per `sync_burst / sync_rate` seconds (20 per 4 s).

A rate of 0 turns a limit off. The defaults are far above what a device does (a
sync every few minutes, an upload batch per flush, a handful of artifact pieces);
they stop a runaway loop or a flood, not a phone.

The client is its device when the request carries a valid device token
("device:<id>"), so devices behind one address never share a budget; otherwise
its address ("ip:<addr>"). A request with a bad token counts against its
address: inventing tokens buys no fresh budget. The
address is the socket's peer, or with `proxy_hops` = N the N-th address from the
right of X-Forwarded-For, as the trusted proxies in front wrote it
(server/api/app.py). Requests carrying the operator's key are not limited: the
key already grants every write, and imports send many batches in a row.

Where the counts live decides what "per client" means across processes:
`rate_limit_storage`, default "" = the Redis URL when the Redis store is used,
so every gunicorn worker and every server host share one count; with the SQLite
store, "memory://", so each gunicorn worker process counts on its own and a
client may get up to `workers` times the limit (measured: tests/server/test_limits_live.py).
Set it to a redis:// URL to share counts with SQLite too. A limiter storage that
fails is logged and the request served: the limit is a guard, not a dependency.
"""

from __future__ import annotations

import hmac
import math
import time
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import urlsplit

from flask import Flask, current_app, g, request
from flask_limiter import ApplicationLimit, Limiter, RateLimitExceeded

from pocketrank.shared.errors import AuthError

from ..config import Config
from .auth import current_device


def limit_string(burst: int, rate: float) -> str | None:
    """`burst` requests per window of burst / rate seconds (at least one), in Flask-Limiter's notation."""
    if rate <= 0 or burst <= 0:
        return None
    return f"{burst} per {max(1, round(burst / rate))} second"


def storage_uri(config: Config) -> str:
    if config.rate_limit_storage:
        return config.rate_limit_storage
    if config.store == "redis" and config.redis_cluster:  # limits names a cluster by its scheme
        return "redis+cluster://" + urlsplit(config.redis_url).netloc
    return config.redis_url if config.store == "redis" else "memory://"


def client_key() -> str:
    if "pocketrank_client" not in g:  # asked by each limit; a bad token is looked up once
        try:
            device = current_device()
        except AuthError:  # a missing or bad token: the view answers 401; the count is the address's
            device = None
        g.pocketrank_client = f"device:{device.device_id}" if device is not None else f"ip:{request.remote_addr}"
    return g.pocketrank_client


def _is_device() -> bool:
    return client_key().startswith("device:")


def _is_operator() -> bool:
    key = current_app.config["POCKETRANK"].operator_key
    given = request.headers.get("X-Operator-Key", "")
    return bool(key) and hmac.compare_digest(key.encode(), given.encode())


def init_app(app: Flask, config: Config) -> Limiter:
    """The app's limiter: the every-endpoint limits now, the sync limit on GET /v1/sync (registered before)."""
    device = limit_string(config.request_burst, config.request_rate)
    address = limit_string(config.address_burst, config.address_rate)
    every: list[str | Callable[[], str] | ApplicationLimit] = []
    if device:
        every.append(ApplicationLimit(device, exempt_when=lambda: not _is_device()))
    if address:
        every.append(ApplicationLimit(address, exempt_when=_is_device))
    limiter = Limiter(
        client_key, app=app, application_limits=every, storage_uri=storage_uri(config),
        storage_options={"key_prefix": f"{config.redis_prefix}ratelimit"},  # Redis keys beside the store's
        strategy="sliding-window-counter",
        headers_enabled=False,  # Retry-After is written on the 429 itself (retry_after)
        swallow_errors=True)
    limiter.request_filter(_is_operator)
    sync = limit_string(config.sync_burst, config.sync_rate)
    if sync:
        view = app.view_functions["sync.get_sync"]
        app.view_functions["sync.get_sync"] = cast(Any, limiter.limit(sync)(view))  # the same view, limited
    return limiter


def retry_after(limiter: Limiter) -> int:
    """Whole seconds until the breached limit lets one more request through (at least 1)."""
    breached = limiter.current_limit
    if breached is None:
        return 1
    return max(1, math.ceil(breached.reset_at - time.time()))


__all__ = ["RateLimitExceeded", "init_app", "retry_after"]
