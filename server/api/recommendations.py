"""GET /v1/recommendations: retrieval -> ranker -> business rules; segment or popular for new users."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request

from ..segments import parse_attrs
from .params import id_arg, int_arg

bp = Blueprint("recommendations", __name__)


@bp.get("/v1/recommendations")
def get_recommendations():
    config = current_app.config["POCKETRANK"]
    serving = current_app.extensions["pocketrank"]
    user_id = id_arg("user_id")
    k = int_arg("k", config.default_k, 1, config.max_k)
    rec = serving.recommend(user_id, k, parse_attrs(request.args))
    items = []
    for rank, (item_id, score) in enumerate(rec.items, 1):
        item = {"item_id": item_id, "score": round(float(score), 6), "rank": rank}
        if item_id in rec.slots:
            item["slot"] = rec.slots[item_id]
        items.append(item)
    body = dict(user_id=user_id, source="server", path=rec.path, model_version=rec.model_version,
                bundle_version=serving.cached_bundle_version, items=items)
    if rec.segment:
        body["segment"] = rec.segment
    return jsonify(body)
