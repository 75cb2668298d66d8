"""Per-request hooks: the request id, the request metrics and one log line per request.

`X-Request-ID`: a caller's (or a proxy's) id is kept when it is 1-128 characters of letters, digits
and `-_.:`; anything else (too long, spaces, control characters, a header injection attempt) is
replaced by a fresh one, so the id is safe to log and to echo. Every answer carries it back, and
every log line written while the request is handled carries it (server/logs.py).

The metrics (server/monitoring/service.py) are labelled by the route's rule, not the path.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid

from flask import Flask, Response, g, got_request_exception, request

from .. import logs
from ..monitoring.service import UNMATCHED, ServiceMetrics

HEADER = "X-Request-ID"
VALID_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
access = logging.getLogger("pocketrank.access")


def request_id(given: str | None) -> str:
    """The caller's id if it is safe to log and echo, else a fresh one."""
    if given and VALID_ID.fullmatch(given):
        return given
    return uuid.uuid4().hex


def _route() -> str:
    rule = request.url_rule
    return rule.rule if rule is not None else UNMATCHED


def init_app(app: Flask, metrics: ServiceMetrics) -> None:
    """Register the hooks; call before any extension that may answer in a before_request (the rate limit)."""
    app.extensions["pocketrank.service_metrics"] = metrics

    @app.before_request
    def _start() -> None:
        g.pocketrank_t0 = time.perf_counter()
        g.request_id = request_id(request.headers.get(HEADER))
        g.pocketrank_rid_token = logs.REQUEST_ID.set(g.request_id)

    @app.after_request
    def _finish(resp: Response) -> Response:
        rid = g.get("request_id") or request_id(None)
        resp.headers[HEADER] = rid
        elapsed = time.perf_counter() - g.get("pocketrank_t0", time.perf_counter())
        route, status = _route(), resp.status_code
        metrics.observe(route, request.method, status, elapsed)
        if request.endpoint == "sync.get_sync":
            metrics.sync_bytes.labels(str(status)).observe(resp.calculate_content_length() or 0)
        elif request.endpoint == "events.post_events" and status in (200, 422):
            metrics.observe_lags(_accepted_timestamps(resp))
        access.info("%s %s %s %.1f ms", request.method, request.path, status, elapsed * 1000,
                    extra={"method": request.method, "route": route, "path": request.path, "status": status,
                           "duration_ms": round(elapsed * 1000, 3), "remote_addr": request.remote_addr,
                           "request_id": rid})
        return resp

    @app.teardown_request
    def _end(_exc: BaseException | None) -> None:
        token = g.pop("pocketrank_rid_token", None)
        if token is not None:
            logs.REQUEST_ID.reset(token)

    def _exception(sender: Flask, exception: BaseException, **_: object) -> None:
        metrics.exceptions.labels(_route(), type(exception).__name__).inc()

    got_request_exception.connect(_exception, app, weak=False)


def _accepted_timestamps(resp: Response) -> list[float]:
    """The timestamps of the events this POST /v1/events logged (its results say which)."""
    sent = request.get_json(silent=True)  # parsed once already by the view; Flask keeps it
    if not isinstance(sent, dict) or not isinstance(sent.get("events"), list):
        return []
    try:
        results = json.loads(resp.get_data())["results"]
    except (ValueError, KeyError, TypeError):
        return []
    out = []
    for ev, res in zip(sent["events"], results):
        if isinstance(res, dict) and res.get("status") == "accepted" and isinstance(ev, dict):
            ts = ev.get("timestamp")
            if isinstance(ts, (int, float)) and not isinstance(ts, bool):
                out.append(float(ts))
    return out
