"""POST /v1/events: idempotent ingestion; each event accepted, duplicate or rejected."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from shared.errors import ValidationError
from shared.schemas import validate_event

from .params import json_body

bp = Blueprint("events", __name__)


@bp.post("/v1/events")
def post_events():
    config = current_app.config["POCKETRANK"]
    serving = current_app.extensions["pocketrank"]
    body = json_body()
    raw = body.get("events") if isinstance(body, dict) else None
    if not isinstance(raw, list):
        raise ValidationError("events", "must be a list of event objects")
    if len(raw) > config.max_events_per_batch:
        raise ValidationError("events", f"at most {config.max_events_per_batch} events per request")
    serving.refresh()
    results: list[dict] = [{} for _ in raw]
    valid, positions = [], []
    for pos, obj in enumerate(raw):
        try:
            ev = validate_event(obj)
        except ValidationError as exc:
            event_id = obj.get("event_id") if isinstance(obj, dict) and isinstance(obj.get("event_id"), str) else None
            results[pos] = {"event_id": event_id, "status": "rejected", "field": exc.field, "reason": exc.message}
            continue
        valid.append(ev)
        positions.append(pos)
    # The events are committed (WAL, synchronous=FULL) before this answer is sent.
    new = serving.store.append_events(valid, serving.vectors, serving.titles, serving.dim)
    for pos, ev, is_new in zip(positions, valid, new):
        results[pos] = {"event_id": ev.event_id, "status": "accepted" if is_new else "duplicate"}
    counts = {s: sum(r["status"] == s for r in results) for s in ("accepted", "duplicate", "rejected")}
    return jsonify(results=results, **counts)
