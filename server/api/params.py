"""Query and body parsing that answers bad input with a 400 naming the field."""

from __future__ import annotations

from typing import Any

from flask import request

from shared.errors import ValidationError
from shared.schemas import check_id


def number_arg(name: str, default, lo, hi, cast=float):
    """A query parameter parsed with `cast` (int or float) and bounded to [lo, hi], else `default`."""
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = cast(raw)
    except ValueError as exc:
        raise ValidationError(name, "must be an integer" if cast is int else "must be a number") from exc
    if not lo <= value <= hi:  # also refuses nan
        show = str if cast is int else "{:g}".format
        raise ValidationError(name, f"must be between {show(lo)} and {show(hi)}")
    return value


def int_arg(name: str, default: int, lo: int, hi: int) -> int:
    return number_arg(name, default, lo, hi, cast=int)


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


def json_batch(key: str, limit: int) -> list:
    """The body's `key` list (a batch of objects), at most `limit` long; else a 400 naming `key`."""
    body = json_body()
    raw = body.get(key) if isinstance(body, dict) else None
    if not isinstance(raw, list):
        raise ValidationError(key, f"must be a list of {key[:-1]} objects")
    if len(raw) > limit:
        raise ValidationError(key, f"at most {limit} {key} per request")
    return raw
