"""POST /v1/items and GET /v1/items/<id>: add or change products between training runs.

A product the catalogue has not seen gets a provisional, content-only vector at
once (server/online/catalogue.py), so it can be retrieved, ranked and explored before
the next retraining replaces that vector with a learned one. A change to a
known product may name only the fields that change (say price or in_stock).
"""

from __future__ import annotations

from dataclasses import replace

from flask import Blueprint, abort, current_app, jsonify

from pocketrank.shared.errors import ValidationError
from pocketrank.shared.schemas import check_item_id, validate_item

from .auth import check_operator_key
from .contract import ProductBatch
from .params import json_batch

bp = Blueprint("items", __name__)


def _rejected(obj, exc: ValidationError) -> dict:
    item_id = obj.get("item_id") if isinstance(obj, dict) and isinstance(obj.get("item_id"), (str, int)) else None
    return {"item_id": None if item_id is None else str(item_id)[:64], "status": "rejected", "field": exc.field,
            "reason": exc.message}


@bp.post("/v1/items")
def post_items():
    check_operator_key("changing the catalogue")
    config = current_app.config["POCKETRANK"]
    serving = current_app.extensions["pocketrank"]
    raw = json_batch(ProductBatch, config.max_items_per_batch)
    skus = []
    for obj in raw:
        try:
            skus.append(check_item_id(obj.get("item_id"), wire=True) if isinstance(obj, dict) else None)
        except ValidationError:
            skus.append(None)
    index = serving.store.item_index(s for s in skus if s is not None)
    stored = serving.store.get_items(index.values())  # one read for the whole batch
    existing = {sku: stored[i] for sku, i in index.items() if i in stored}
    cat = serving.catalogue
    results, items = [], {}
    for obj, sku in zip(raw, skus):
        try:
            if not isinstance(obj, dict):
                raise ValidationError("item", f"must be a JSON object, got {type(obj).__name__}")
            old = existing.get(sku)
            base = old.to_dict() if old else {}
            if "category" in obj and "categories" not in obj:
                base.pop("categories", None)  # a new path brings its own levels
            item = validate_item({**base, **obj}, wire=True)
        except ValidationError as exc:
            results.append(_rejected(obj, exc))
            continue
        items[item.sku] = (replace(item, item_id=old.item_id) if old else item, old)  # the last change wins
        results.append({"item_id": item.sku, "status": "updated" if old else "created"})
    if items:
        # New products get their index first: a provisional vector is stored under it.
        stored = {it.sku: it for it in serving.store.put_items(it for it, _ in items.values())}
        vectors, provisional = {}, set()
        for sku, (item, old) in items.items():
            item = stored[sku]
            content_changed = old is None or (old.title, old.category, old.categories, old.attributes, old.price) != (
                item.title, item.category, item.categories, item.attributes, item.price)
            if item.item_id not in cat.vector_map() or (item.item_id in cat.provisional and content_changed):
                vectors[item.item_id] = serving.new_product_vector(item, cat)
                provisional.add(item.item_id)
        if vectors:
            serving.store.put_items([stored[s] for s in items if stored[s].item_id in vectors], vectors, provisional)
        serving.catalogues.invalidate()
        for r in results:
            if r["status"] != "rejected":
                i = stored[r["item_id"]].item_id
                r["provisional"] = i in provisional or i in cat.provisional
    counts = {s: sum(r["status"] == s for r in results) for s in ("created", "updated", "rejected")}
    return jsonify(results=results, **counts)


@bp.get("/v1/items/<path:item_id>")
def get_item(item_id: str):
    sku = check_item_id(item_id)
    serving = current_app.extensions["pocketrank"]
    index = serving.store.item_index([sku]).get(sku)
    item = None if index is None else serving.store.get_items([index]).get(index)
    if item is None:
        abort(404, description=f"no item {sku!r} in the catalogue")
    cat = serving.catalogue
    return jsonify(**item.to_dict(), provisional=index in cat.provisional,
                   has_vector=bool(len(cat.ids)) and index in cat.vector_map())
