"""POST /v1/items and GET /v1/items/<id>: add or change products between training runs.

A product the catalogue has not seen gets a provisional, content-only vector at
once (server/catalogue.py), so it can be retrieved, ranked and explored before
the next retraining replaces that vector with a learned one. A change to a
known product may name only the fields that change (say price or in_stock).
"""

from __future__ import annotations

from flask import Blueprint, abort, current_app, jsonify

from shared.errors import ValidationError
from shared.schemas import check_item_id, validate_item

from ..auth import check_operator_key
from ..catalogue import provisional_vector
from .params import json_batch

bp = Blueprint("items", __name__)


def _rejected(obj, exc: ValidationError) -> dict:
    item_id = obj.get("item_id") if isinstance(obj, dict) and isinstance(obj.get("item_id"), int) else None
    return {"item_id": item_id, "status": "rejected", "field": exc.field, "reason": exc.message}


@bp.post("/v1/items")
def post_items():
    check_operator_key("changing the catalogue")
    config = current_app.config["POCKETRANK"]
    serving = current_app.extensions["pocketrank"]
    raw = json_batch("items", config.max_items_per_batch)
    ids = []
    for obj in raw:
        try:
            ids.append(check_item_id(obj.get("item_id")) if isinstance(obj, dict) else None)
        except ValidationError:
            ids.append(None)
    existing = serving.store.get_items(i for i in ids if i is not None)
    cat = serving.catalogue
    results, items, vectors, provisional = [], {}, {}, set()
    for obj, item_id in zip(raw, ids):
        try:
            if not isinstance(obj, dict):
                raise ValidationError("item", f"must be a JSON object, got {type(obj).__name__}")
            old = existing.get(item_id)
            item = validate_item({**old.to_dict(), **obj} if old else obj)
        except ValidationError as exc:
            results.append(_rejected(obj, exc))
            continue
        content_changed = old is None or (old.title, old.category, old.categories) != (
            item.title, item.category, item.categories)
        no_vector = item.item_id not in cat.vector_map()
        if no_vector or (item.item_id in cat.provisional and content_changed):
            vectors[item.item_id] = provisional_vector(item, cat)
            provisional.add(item.item_id)
        items[item.item_id] = item  # the last change to an id in one request wins
        results.append({"item_id": item.item_id, "status": "updated" if old else "created",
                        "provisional": item.item_id in provisional or item.item_id in cat.provisional})
    if items:
        serving.store.put_items(items.values(), vectors, provisional)
        serving.catalogues.invalidate()
    counts = {s: sum(r["status"] == s for r in results) for s in ("created", "updated", "rejected")}
    return jsonify(results=results, **counts)


@bp.get("/v1/items/<int:item_id>")
def get_item(item_id: int):
    item_id = check_item_id(item_id)  # the URL converter takes any size; SQLite's integers do not
    serving = current_app.extensions["pocketrank"]
    item = serving.store.get_items([item_id]).get(item_id)
    if item is None:
        abort(404, description=f"no item {item_id} in the catalogue")
    cat = serving.catalogue
    return jsonify(**item.to_dict(), provisional=item_id in cat.provisional,
                   has_vector=bool(len(cat.ids)) and item_id in cat.vector_map())
