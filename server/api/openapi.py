from flask import Blueprint, jsonify

from ..openapi import document

bp = Blueprint("openapi", __name__)


@bp.get("/openapi.json")
def openapi_json():
    return jsonify(document())
