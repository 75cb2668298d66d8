"""GET /v1/recommendations: retrieval -> ranker -> business rules; segment or popular for new users.

A personal list says what a user looked at and bought, so it goes only to a device whose token
covers the user (server/api/auth.py): 401 without a valid token where tokens are required, 403
for another device's user.
"""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from ..online.segments import SEGMENT_FIELDS
from .auth import authorize_users
from .contract import query_models
from .params import query

bp = Blueprint("recommendations", __name__)


@bp.get("/v1/recommendations")
def get_recommendations():
    config = current_app.config["POCKETRANK"]
    serving = current_app.extensions["pocketrank"]
    q = query(query_models(config)["recommendations"])
    user_id, k = q.user_id, q.k
    authorize_users([user_id])
    attrs = {name: getattr(q, name) for name in SEGMENT_FIELDS if getattr(q, name)}  # "": not given
    rec = serving.recommend(user_id, k, attrs)
    items = []
    # Display metadata with each item: a device holds entries only for its own lists' items (wire 4),
    # not the catalogue, so it shows a server-ranked item it holds no entry for from these fields.
    meta = serving.store.get_items([int(i) for i, _ in rec.items])
    for rank, (item_id, score) in enumerate(rec.items, 1):
        sku = meta[int(item_id)].external_id if int(item_id) in meta else str(int(item_id))
        item = {"item_id": sku, "score": round(float(score), 6), "rank": rank}
        if int(item_id) in meta:
            it = meta[int(item_id)]
            item.update(title=it.title, category=it.category, price=float(it.price), in_stock=bool(it.in_stock))
        if item_id in rec.slots:
            item["slot"] = rec.slots[item_id]
        items.append(item)
    body = dict(user_id=user_id, source="server", path=rec.path, model_version=rec.model_version,
                bundle_version=serving.cached_bundle_version, items=items)
    if rec.segment:
        body["segment"] = rec.segment
    return jsonify(body)
