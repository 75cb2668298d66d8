"""Query and body parsing that answers bad input with a 400 naming the field."""

from __future__ import annotations

from typing import Any

from flask import request

from shared.errors import ValidationError
from shared.schemas import check_id


def int_arg(name: str, default: int, lo: int, hi: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ValidationError(name, "must be an integer") from exc
    if not lo <= value <= hi:
        raise ValidationError(name, f"must be between {lo} and {hi}")
    return value


def id_arg(name: str) -> str:
    raw = request.args.get(name)
    if not raw:
        raise ValidationError(name, "is required")
    return check_id(name, raw)


def json_body() -> Any:
    body = request.get_json(silent=True)
    if body is None:
        raise ValidationError("body", "must be a JSON document with Content-Type: application/json")
    return body
