"""GET /metrics (Prometheus text), GET /v1/metrics/summary and GET /v1/metrics/shadow (JSON): operators only.

They tell revenue, CTR, the model registry and the canary, so each needs the operator key (server/api/auth.py;
Prometheus sends it as `authorization: {credentials: <key>}`, a Bearer header).

The figures come from this process's RunningMetrics (server/monitoring/running.py): each request first
folds what was logged since the previous one, then reads the running totals of the sessions that started in
a window ending at the newest event (`window` seconds, default a day; `bucket` seconds per time-series point,
default an hour; server/monitoring/window.py). A request costs what was logged since the last look plus
O(segment values + buckets), however long the log (the first request for a window: one pass over the
sessions held); one look at a time per process. A request never reads a long backlog itself (a new
worker's whole log, a burst): past INLINE_SECONDS a background thread reads the rest. Until a new
worker's first read reaches the log's end, /metrics leaves the window's figures out and the JSON
endpoints answer 503 with Retry-After (after waiting up to JSON_WAIT_SECONDS). /metrics also carries the service's request metrics, summed
over every gunicorn worker, and gauges read from the store at scrape time (server/monitoring/service.py). The shadow report is this process's comparisons of the shadow model against
the served one (server/release/shadow.py), with hit rates over the clicks logged since the shadow started
(at most `limit` of the newest). Aggregates only, no user ids.
"""

from __future__ import annotations

import logging
import time

from flask import Blueprint, Response, current_app, jsonify
from werkzeug.exceptions import ServiceUnavailable

from pocketrank.shared.errors import ValidationError

from ..monitoring import prom, source
from ..monitoring.running import MAX_CLICKS, RunningMetrics
from ..monitoring.service import StoreGauges
from ..release import shadow
from ..release.registry import Registry
from .auth import check_operator_key
from .health import readiness
from .params import number_arg

bp = Blueprint("metrics", __name__)
log = logging.getLogger(__name__)

DEFAULT_WINDOW, DEFAULT_BUCKET = 86_400.0, 3_600.0
MAX_BUCKETS = 10_000
# A scrape has a timeout (Prometheus' default is 10 s, and the goal is well under 50 ms): a request folds new
# log entries for at most INLINE_SECONDS, so a backlog never lands on it. The JSON endpoints, asked by a person
# or a script, wait up to JSON_WAIT_SECONDS for a backlog instead, then answer 503 with Retry-After.
INLINE_SECONDS = 0.01
JSON_WAIT_SECONDS = 10.0
RETRY_AFTER_SECONDS = 5


@bp.record_once
def _start_counting(state) -> None:
    # Made with the app, not at the first request: events_per_second counts what is logged from here on.
    store = state.app.extensions["pocketrank"].store
    state.app.extensions["pocketrank.metrics"] = RunningMetrics(source.log_head(store))


def _running() -> RunningMetrics:
    return current_app.extensions["pocketrank.metrics"]


def _catch_up(wait: float = 0.0) -> RunningMetrics:
    """Fold what was logged since the last look, for at most INLINE_SECONDS of this request (a longer backlog,
    such as a new worker's whole log, is read by a background thread), then wait up to `wait` seconds for
    that thread."""
    running = _running()
    if running.lock.acquire(timeout=INLINE_SECONDS):  # busy: a background read holds it, and reads the tail too
        try:
            running.look(current_app.extensions["pocketrank"].store, until=time.monotonic() + INLINE_SECONDS)
        finally:
            running.lock.release()
    if wait and running.following:
        running.wait(wait)
    return running


def _window_figures(running: RunningMetrics, window: float, bucket: float, wait: float) -> dict:
    """The window's figures; when the lock stays busy past `wait` (a background read's pass over the sessions),
    the last ones computed, however old (pocketrank_business_figures_behind_seconds says by how much)."""
    last = running.last_summary(window, bucket)
    # Never computed (a window asked for the first time): nothing to serve but what the pass computes.
    if not running.lock.acquire(timeout=wait if wait > 0 and last is not None else -1):
        return last or {}
    try:
        return running.recent_summary(window, bucket)
    finally:
        running.lock.release()


def _still_reading() -> None:
    """The JSON figures' answer while a new worker is still reading the log for the first time: a 503 that
    says when to ask again (figures from part of the log would be wrong, not merely stale)."""
    raise ServiceUnavailable("the metrics are still reading the event log for the first time; ask again shortly",
                             retry_after=RETRY_AFTER_SECONDS)


def build_summary(window: float = DEFAULT_WINDOW, bucket: float = DEFAULT_BUCKET, wait: float = JSON_WAIT_SECONDS,
                  partial: bool = False) -> dict:
    """The JSON summary's figures. Until the first read of the log has reached its end, the window's figures
    are left out if `partial` (the /metrics page), else the answer is a 503 (`_still_reading`)."""
    serving = current_app.extensions["pocketrank"]
    _running().want(window, bucket)  # first: a background read computes these before it says it is done
    running = _catch_up(wait)
    if not running.complete and not partial:
        _still_reading()
    figures = _window_figures(running, window, bucket, INLINE_SECONDS if partial else -1) if running.complete else {}
    eps = running.events_per_second()
    shadow_report = _shadow(running, MAX_CLICKS)
    registry = Registry(serving.home.root)
    rollout = registry.rollout()
    return {
        **figures,
        "events_per_second": eps,
        "models": {"current": serving.store.get_meta("current_model"), "live": registry.live(),
                   "canary": rollout["version"] if rollout else None},
        "canary": ({**{k: rollout[k] for k in ("rollout_id", "version", "share", "control", "started_at")},
                    "looks": sum(1 for d in rollout["decisions"] if "look" in d),
                    "last_decision": rollout["decisions"][-1] if rollout["decisions"] else None}
                   if rollout else None),
        "registry": {v: rec["state"] for v, rec in registry.versions().items()},
        "shadow": shadow_report,
    }


def build_shadow(limit: int = MAX_CLICKS) -> dict | None:
    """The shadow report, or None when no shadow is set."""
    running = _catch_up(JSON_WAIT_SECONDS)
    if not running.complete:
        _still_reading()
    with running.lock:
        return _shadow(running, limit)


def _shadow(running: RunningMetrics, limit: int) -> dict | None:
    serving = current_app.extensions["pocketrank"]
    sh = serving.routing().get("shadow")
    if not sh:
        return None
    shadow_log = serving.shadow.log_for((sh["version"], sh["started_at"]))
    clicks = running.clicks_after(sh.get("log_from", 0), limit)
    return {"version": sh["version"], "sample": sh["sample"], "started_at": sh["started_at"],
            "served_model": serving.live_version(), **shadow.report(shadow_log, clicks)}


def _args() -> tuple[float, float]:
    window = number_arg("window", DEFAULT_WINDOW, 1, 90 * 86_400)
    bucket = number_arg("bucket", DEFAULT_BUCKET, 1, 90 * 86_400)
    if window / bucket > MAX_BUCKETS:
        raise ValidationError("bucket", f"gives more than {MAX_BUCKETS:,} buckets for this window; make it larger")
    return window, bucket


@bp.get("/v1/metrics/summary")
def summary():
    check_operator_key("reading the metrics")
    return jsonify(build_summary(*_args()))


@bp.get("/v1/metrics/shadow")
def shadow_report():
    check_operator_key("reading the metrics")
    limit = number_arg("limit", MAX_CLICKS, 1, MAX_CLICKS, cast=int)  # the document says integer: 2.5 is a 400
    return jsonify({"shadow": build_shadow(limit)})


def _store_figures(complete: bool) -> dict[str, float | None]:
    """The gauges read from the store at scrape time (service.StoreGauges); a store that does not answer
    leaves them out rather than failing the whole scrape."""
    serving = current_app.extensions["pocketrank"]
    running = _running()
    out: dict[str, float | None] = {
        "newest_event_age_seconds": max(0.0, time.time() - running.newest) if running.newest else None}
    try:
        out["updater_pending_events"] = float(serving.store.pending_count())
        out["bundle_version"] = float(serving.bundle_version)
    except Exception as exc:  # noqa: BLE001 - whatever the backend raises; /readyz says what is wrong
        log.warning("store gauges left out of this scrape: %s: %s", type(exc).__name__, exc)
    out["ready"] = 1.0 if readiness()["ready"] else 0.0
    out["business_figures_complete"] = 1.0 if complete else 0.0
    if running.caught_up_at is not None:
        out["business_figures_behind_seconds"] = (max(0.0, time.monotonic() - running.caught_up_at)
                                                  if running.following else 0.0)
    return out


@bp.get("/metrics")
def metrics():
    """The business figures, the service's request metrics (summed over every worker under gunicorn)
    and the store's gauges, on one page."""
    check_operator_key("reading the metrics")
    service = current_app.extensions["pocketrank.service_metrics"]
    # Never waits for a backlog: until a new worker's first read of the log ends, the window's figures are left
    # out (pocketrank_business_figures_complete 0) and the service's and store's gauges answer alone.
    summary = build_summary(*_args(), wait=0.0, partial=True)
    # `complete` says whether this page carries the window's figures, not what `running.complete` says by the
    # time the gauges render: a background read that ends in between would make a page claim figures it lacks.
    body = prom.render(summary, *service.collectors(), StoreGauges(lambda: _store_figures("overall" in summary)))
    return Response(body, mimetype=None, content_type=prom.CONTENT_TYPE)
