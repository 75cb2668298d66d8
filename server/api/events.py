"""POST /v1/events: idempotent ingestion; each event accepted, duplicate or rejected.

The batch is checked as a whole first (a JSON object with an `events` list of at
most max_events_per_batch); a bad batch is a 400 and nothing is logged. Then each
event on its own: the schema, an item the catalogue knows, and a timestamp no
further in the future than max_clock_skew. Good events are appended to the log
in one transaction, durable before the answer; a rejected neighbour never costs
them. With the embedded updater they are folded into their users' embeddings
before the answer too, so a client reads its own writes.
"""

from __future__ import annotations

import time

from flask import Blueprint, current_app, jsonify

from shared.errors import ValidationError
from shared.schemas import validate_event

from .params import json_body

bp = Blueprint("events", __name__)


def check_event(obj, known_items, horizon: float):
    ev = validate_event(obj)
    if ev.item_id is not None and ev.item_id not in known_items:
        raise ValidationError("item_id", f"{ev.item_id} is not in the catalogue; add it with POST /v1/items first")
    if ev.timestamp > horizon:
        raise ValidationError("timestamp", "is in the future beyond the allowed clock skew; check the device clock")
    return ev


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
    known = serving.catalogue.in_stock  # every item in the catalogue, in stock or not
    horizon = time.time() + config.max_clock_skew
    results: list[dict] = [{} for _ in raw]
    valid, positions = [], []
    for pos, obj in enumerate(raw):
        try:
            ev = check_event(obj, known, horizon)
        except ValidationError as exc:
            event_id = obj.get("event_id") if isinstance(obj, dict) and isinstance(obj.get("event_id"), str) else None
            results[pos] = {"event_id": event_id, "status": "rejected", "field": exc.field, "reason": exc.message}
            continue
        valid.append(ev)
        positions.append(pos)
    # Durable (committed) when this returns; with the embedded updater, folded too.
    if config.updater == "embedded":
        new = serving.updater.ingest(valid)
    else:
        new = serving.store.append_events(valid)
    for pos, ev, is_new in zip(positions, valid, new):
        results[pos] = {"event_id": ev.event_id, "status": "accepted" if is_new else "duplicate"}
    counts = {s: sum(r["status"] == s for r in results) for s in ("accepted", "duplicate", "rejected")}
    return jsonify(results=results, **counts)
