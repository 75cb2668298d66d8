"""Flask application factory. Production: `gunicorn -c python:pocketrank.server.gunicorn_conf pocketrank.server.wsgi:app`."""

from __future__ import annotations

import logging
from pathlib import Path

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.middleware.proxy_fix import ProxyFix

from pocketrank.shared.errors import AuthError, PocketrankError, ValidationError

from ..config import Config
from ..monitoring.service import ServiceMetrics
from ..online.serving import Serving
from . import (
    auth,
    devices,
    events,
    health,
    items,
    monitoring as metrics_api,
    observe,
    openapi,
    ratelimit,
    recommendations,
    sync,
    users,
)
from .device_registry import DeviceRegistry
from .params import BoundedJSONProvider

log = logging.getLogger(__name__)


def create_app(config: Config | None = None, **overrides) -> Flask:
    config = config or Config.from_env(**overrides)
    app = Flask(__name__)
    app.json = BoundedJSONProvider(app)  # every JSON body passes one door: nesting, NaN, number sizes
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.config["POCKETRANK"] = config
    app.extensions["pocketrank"] = Serving(config)
    auth.init_app(app, DeviceRegistry(Path(config.home) / "devices.sqlite"))
    observe.init_app(app, ServiceMetrics())  # request id, request metrics, a log line per request: first hooks
    for bp in (health.bp, events.bp, recommendations.bp, sync.bp, devices.bp, openapi.bp, metrics_api.bp,
               items.bp, users.bp):
        app.register_blueprint(bp)
    if config.proxy_hops:  # the client's address as the trusted proxies in front saw it (rate limit keys)
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=config.proxy_hops)  # type: ignore[method-assign]
    limiter = ratelimit.init_app(app, config)

    @app.errorhandler(AuthError)
    def _auth(exc: AuthError):
        return jsonify(error="unauthorized" if exc.status == 401 else "forbidden", message=str(exc)), exc.status

    @app.errorhandler(ratelimit.RateLimitExceeded)
    def _limited(exc: ratelimit.RateLimitExceeded):
        retry = ratelimit.retry_after(limiter)
        return (jsonify(error="too_many_requests", message=f"rate limit of {exc.description} exceeded; retry in "
                                                          f"{retry} s"), 429, {"Retry-After": str(retry)})

    @app.errorhandler(ValidationError)
    def _invalid(exc: ValidationError):
        return jsonify(error="invalid_request", field=exc.field, message=exc.message), 400

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        message = exc.description
        if exc.code == 413:  # werkzeug's text names no limit; say which one and what to do
            message = (f"request body larger than {config.max_body_bytes} bytes (POCKETRANK_MAX_BODY_BYTES); "
                       "send smaller batches")
        # The exception's own headers (a 503's Retry-After), but the body is JSON, not werkzeug's HTML.
        headers = [(k, v) for k, v in exc.get_headers() if k.lower() != "content-type"]
        return jsonify(error=exc.name.lower().replace(" ", "_"), message=message), exc.code, headers

    @app.errorhandler(MethodNotAllowed)
    def _method(exc: MethodNotAllowed):
        # RFC 9110: a 405 lists the methods the resource does allow (TRACE, PATCH, ... on any path).
        allow = ", ".join(sorted(exc.valid_methods or ()))
        return (jsonify(error="method_not_allowed", message=f"{request.method} is not allowed here; allowed: {allow}"),
                405, {"Allow": allow})

    @app.errorhandler(PocketrankError)
    def _ours(exc: PocketrankError):
        # A missing model or bundle is the operator's to fix, not the client's.
        log.warning("service not ready: %s", exc)
        return jsonify(error="not_ready", message=str(exc)), 503

    return app
