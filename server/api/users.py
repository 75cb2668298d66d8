"""GET /v1/users/<user_id>: the online store's record for one user (embedding freshness, recent sequence)."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, jsonify

from pocketrank.shared.schemas import check_id

from .auth import authorize_users
from .contract import query_models
from .params import query

bp = Blueprint("users", __name__)


@bp.get("/v1/users/<user_id>")
def get_user(user_id: str):
    serving = current_app.extensions["pocketrank"]
    user_id = check_id("user_id", user_id)
    authorize_users([user_id])  # a device reads only its own users
    if not serving.store.has_user(user_id):
        abort(404, description=f"no events folded for user {user_id!r} yet")
    config = current_app.config["POCKETRANK"]
    recent = query(query_models(config)["user"]).recent
    ctx = serving.store.user_context(user_id, serving.dim)
    rec = ctx.record
    embedding, version, source = serving.user_embedding(ctx, user_id)
    cat = serving.catalogue  # the record holds the store's item indexes; the API speaks product ids
    events = [{**e, "item_id": None if e["item_id"] is None else cat.external_id(e["item_id"])}
              for e in (rec.recent_events()[-recent:] if recent else [])]
    return jsonify(
        user_id=user_id,
        n_events=rec.state.n_events,
        updated_at=rec.updated_at,
        log_position=rec.last_pos,
        embedding=[round(float(x), 6) for x in embedding],
        # "encoder": the sequence model's output over the stored history; "state": the folded state's; "none":
        # the answers have no personal vector for this user (the folded state's is shown)
        embedding_from=source,
        model_version=version,
        recent=events,
        features=ctx.features,
    )
