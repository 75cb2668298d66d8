from flask import Blueprint, jsonify

from .openapi_spec import document

bp = Blueprint("openapi", __name__)


@bp.get("/openapi.json")
def openapi_json():
    return jsonify(document())
