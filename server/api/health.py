from flask import Blueprint, current_app, jsonify

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    serving = current_app.extensions["pocketrank"]
    return jsonify(status="ok", model_version=serving.store.get_meta("current_model"),
                   bundle_version=serving.bundle_version)
