"""GET /openapi.json: the document generated from the contract, with this server's configured bounds."""

from flask import Blueprint, current_app, jsonify

from .openapi_spec import document

bp = Blueprint("openapi", __name__)


@bp.get("/openapi.json")
def openapi_json():
    return jsonify(document(current_app.config["POCKETRANK"]))
