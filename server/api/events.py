"""POST /v1/events: idempotent ingestion; each event accepted, duplicate, conflict or rejected.

The batch is checked as a whole first (a JSON object with an `events` list of at
most max_events_per_batch); a bad batch is a 400 and nothing is logged. Then each
event on its own: the schema, an item the catalogue knows, a timestamp no
further in the future than max_clock_skew and, for a device with a token, one
of the device's users, sent from that device (its `device_id`). Good events are appended to the log in one
transaction, durable before the answer; a rejected neighbour never costs them.
With the embedded updater they are folded into their users' embeddings before
the answer too, so a client reads its own writes.

An event whose id was logged before is a duplicate when it is the same event
(a retry after a lost answer: nothing changes) and a conflict when its content
differs (the id was reused for another event: nothing changes either, and the
client is told, since resending it can never get it logged).

The status says whether everything went in: 200 when no event was rejected or
in conflict, 422 when at least one was. Both carry the same per-event results,
so a client acknowledges the accepted and duplicate ones and sets aside
exactly the rejected and conflicting ones; neither is worth retrying unchanged.
Both also carry `server_time`, the server's clock (unix seconds) when it checked the
batch: a device learns from it how far off its own clock is, and re-dates by it an
event refused as dated in the future.

What "unknown" means here:
- an item id the catalogue does not hold is rejected, naming the item (add it
  with POST /v1/items first): folding it would have no vector to fold;
- a user id the server has never seen is accepted: users have no registration
  step, their first event is how they arrive (cold start, then personal). Only
  a malformed user id is rejected, and, for a device holding a token, a user
  the device was not registered for (the same scoping sync applies) or a
  device_id other than the token's: a device speaks only for itself.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import cast

from flask import Blueprint, current_app, jsonify

from pocketrank.shared.errors import ValidationError
from pocketrank.shared.schemas import validate_event

from .auth import current_device
from .contract import EventBatch
from .device_registry import Device
from .params import json_batch

bp = Blueprint("events", __name__)

MAX_PROBLEMS_NAMED = 3  # in the 422's message; every problem is in `results`


def check_event(obj, index_of: dict[str, int], now: float, skew: float, device: Device | None = None):
    """A valid event with its product id resolved to the catalogue's index, or ValidationError.

    `device`: the token's device, whose users and id the event must carry; None for an anonymous upload."""
    ev = validate_event(obj, wire=True)  # the JSON contract exactly: ids are strings
    if ev.item_id is not None:
        index = index_of.get(cast(str, ev.item_id))  # a validated wire event names the product id
        if index is None:
            raise ValidationError("item_id", f"{ev.item_id!r} is not in the catalogue; add it with POST /v1/items "
                                             "first")
        ev = replace(ev, item_id=index)
    if ev.timestamp > now + skew:
        raise ValidationError("timestamp", f"is {ev.timestamp - now:.0f} s in the future, beyond the allowed clock "
                                           f"skew of {skew:g} s (POCKETRANK_MAX_CLOCK_SKEW); check the device clock")
    if device is not None and ev.user_id not in device.users:
        raise ValidationError("user_id", f"{ev.user_id} is not a user of this device; register it with "
                                         "POST /v1/devices first")
    if device is not None and ev.device_id != device.device_id:
        raise ValidationError("device_id", f"{ev.device_id!r} is not this token's device "
                                           f"({device.device_id!r}); a device sends only its own events")
    return ev


def summary(results: list[dict]) -> str:
    """The 422's message: how many were rejected, and the first few problems by position."""
    bad = [(pos, r) for pos, r in enumerate(results) if r["status"] in ("rejected", "conflict")]
    named = "; ".join(f"events[{pos}]{' (' + r['event_id'] + ')' if r['event_id'] else ''} {r['field']}: "
                      f"{r['reason']}" for pos, r in bad[:MAX_PROBLEMS_NAMED])
    more = f"; and {len(bad) - MAX_PROBLEMS_NAMED} more" if len(bad) > MAX_PROBLEMS_NAMED else ""
    return (f"{len(bad)} of {len(results)} events rejected or in conflict (the others are logged; see results): "
            f"{named}{more}")


@bp.post("/v1/events")
def post_events():
    config = current_app.config["POCKETRANK"]
    serving = current_app.extensions["pocketrank"]
    device = current_device()  # 401 without a token when POCKETRANK_REQUIRE_DEVICE_TOKEN is set
    raw = json_batch(EventBatch, config.max_events_per_batch)
    known = serving.catalogue.index_of  # every item in the catalogue, in stock or not
    now = time.time()
    results: list[dict] = [{} for _ in raw]
    valid, positions = [], []
    for pos, obj in enumerate(raw):
        try:
            ev = check_event(obj, known, now, config.max_clock_skew, device)
        except ValidationError as exc:
            event_id = obj.get("event_id") if isinstance(obj, dict) and isinstance(obj.get("event_id"), str) else None
            results[pos] = {"event_id": event_id, "status": "rejected", "field": exc.field, "reason": exc.message}
            continue
        valid.append(ev)
        positions.append(pos)
    # Durable (committed) when this returns; with the embedded updater, folded too. Requests
    # of this worker's other threads that arrive meanwhile share the commit (group commit).
    new = serving.updater.ingest(valid, fold=config.updater == "embedded")
    seen = [ev for ev, is_new in zip(valid, new) if not is_new]
    conflicts = iter(serving.store.conflicting(seen) if seen else [])
    for pos, ev, is_new in zip(positions, valid, new):
        if is_new:
            results[pos] = {"event_id": ev.event_id, "status": "accepted"}
        elif next(conflicts):
            results[pos] = {"event_id": ev.event_id, "status": "conflict", "field": "event_id",
                            "reason": "already logged with different content; a new event needs a new event_id"}
        else:
            results[pos] = {"event_id": ev.event_id, "status": "duplicate"}
    counts: dict = {s: sum(r["status"] == s for r in results) for s in ("accepted", "duplicate", "conflict", "rejected")}
    counts["server_time"] = now
    if counts["rejected"] or counts["conflict"]:
        return jsonify(error="invalid_events", field="events", message=summary(results), results=results,
                       **counts), 422
    return jsonify(results=results, **counts)
