"""GET /v1/recommendations: retrieval -> ranker -> business rules, or popular for new users."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from .params import id_arg, int_arg

bp = Blueprint("recommendations", __name__)


@bp.get("/v1/recommendations")
def get_recommendations():
    config = current_app.config["POCKETRANK"]
    serving = current_app.extensions["pocketrank"]
    user_id = id_arg("user_id")
    k = int_arg("k", config.default_k, 1, config.max_k)
    ranked, path = serving.recommend(user_id, k)
    return jsonify(
        user_id=user_id,
        source="server",
        path=path,
        model_version=serving.model_version,
        bundle_version=serving.bundle_version,
        items=[{"item_id": i, "score": round(float(s), 6), "rank": r + 1} for r, (i, s) in enumerate(ranked)],
    )
