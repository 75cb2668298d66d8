"""GET /metrics (Prometheus text), GET /v1/metrics/summary and GET /v1/metrics/shadow (JSON).

The first two are computed from the event log at request time over a window ending at the newest
event (`window` seconds, default a day; `bucket` seconds per time-series point, default an hour),
from at most `limit` recent events. The shadow report is this process's comparisons of the shadow
model against the served one (server/release/shadow.py), with hit rates over the clicks logged
since the shadow started. Operators scrape these; they carry aggregates only, no user ids.
"""

from __future__ import annotations

import time

from flask import Blueprint, Response, current_app, jsonify

from shared.errors import ValidationError

from ..monitoring import collector, prom, source
from ..release import shadow
from ..release.registry import Registry
from .params import number_arg

bp = Blueprint("metrics", __name__)

DEFAULT_WINDOW, DEFAULT_BUCKET, DEFAULT_LIMIT = 86_400.0, 3_600.0, 50_000


def build_summary(window: float = DEFAULT_WINDOW, bucket: float = DEFAULT_BUCKET, limit: int = DEFAULT_LIMIT) -> dict:
    serving = current_app.extensions["pocketrank"]
    store = serving.store
    events = source.recent_events(store, limit=limit)
    until = max((e.timestamp for e in events), default=0.0)
    since = until - window
    events = [e for e in events if e.timestamp >= since]
    prices = {it.item_id: it.price for it in store.items()}
    summary = collector.summarize(events, prices)
    registry = Registry(serving.home.root)
    rollout = registry.rollout()
    return {
        "window": {"since": since, "until": until, "seconds": window, "events": len(events)},
        **summary,
        "timeseries": collector.timeseries(events, bucket, prices),
        "events_per_second": source.events_per_second(store, time.time()),
        "models": {"current": store.get_meta("current_model"), "live": registry.live(),
                   "canary": rollout["version"] if rollout else None},
        "canary": ({**{k: rollout[k] for k in ("rollout_id", "version", "share", "control", "started_at")},
                    "looks": sum(1 for d in rollout["decisions"] if "look" in d),
                    "last_decision": rollout["decisions"][-1] if rollout["decisions"] else None}
                   if rollout else None),
        "registry": {v: rec["state"] for v, rec in registry.versions().items()},
        "shadow": build_shadow(events_limit=limit),
    }


def build_shadow(events_limit: int = DEFAULT_LIMIT) -> dict | None:
    """The shadow report, or None when no shadow is set."""
    serving = current_app.extensions["pocketrank"]
    sh = serving.routing().get("shadow")
    if not sh:
        return None
    shadow_log = serving.shadow.log_for((sh["version"], sh["started_at"]))
    events = source.events_after(serving.store, sh.get("log_from", 0), limit=events_limit)
    return {"version": sh["version"], "sample": sh["sample"], "started_at": sh["started_at"],
            "served_model": serving.live_version(), **shadow.report(shadow_log, events)}


def _args() -> tuple[float, float, int]:
    window = number_arg("window", DEFAULT_WINDOW, 1, 90 * 86_400)
    bucket = number_arg("bucket", DEFAULT_BUCKET, 1, 90 * 86_400)
    if window / bucket > 10_000:
        raise ValidationError("bucket", "gives more than 10,000 buckets for this window; make it larger")
    return window, bucket, int(number_arg("limit", DEFAULT_LIMIT, 1, source.MAX_EVENTS))


@bp.get("/v1/metrics/summary")
def summary():
    return jsonify(build_summary(*_args()))


@bp.get("/v1/metrics/shadow")
def shadow_report():
    limit = int(number_arg("limit", DEFAULT_LIMIT, 1, source.MAX_EVENTS))
    return jsonify({"shadow": build_shadow(limit)})


@bp.get("/metrics")
def metrics():
    body = prom.render(build_summary(*_args()))
    return Response(body, mimetype=None, content_type=prom.CONTENT_TYPE)
