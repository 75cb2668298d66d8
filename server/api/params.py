"""Query and body parsing that answers bad input with a 400 naming the field.

JSON bodies pass one door (`parse_json`, also the app's JSON provider) before any
schema sees them: at most MAX_JSON_DEPTH levels of nesting, no NaN or Infinity,
every integer within a signed 64-bit range and every decimal finite. Past the
door the contract's models (shared/models.py, server/api/contract.py) bound each
field; no number that gets through can overflow a float, a SQLite integer or a
packed f32/i64. Query parameters go through their endpoint's query model (`query`).
"""

from __future__ import annotations

import json
from typing import Any

import pydantic
from flask import request
from flask.json.provider import DefaultJSONProvider

from pocketrank.shared.errors import ValidationError
from pocketrank.shared.schemas import refusal

from .contract import Body, Query


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


def query(model: type[Query]) -> Any:
    """The request's query parameters checked by `model` (the first value of each), or a 400 naming the
    first bad one in the words of its Says."""
    args = request.args.to_dict()
    try:
        return model.model_validate(args)
    except pydantic.ValidationError as exc:
        raise refusal(exc, model, args) from None


# Our deepest document is a batch: {"items": [{"attributes": {...}}]} is 3 levels. 32 leaves room
# and keeps every later walk over a body (ours or a library's) far from Python's recursion limit.
MAX_JSON_DEPTH = 32
MAX_JSON_INT = 2**63 - 1  # anything wider fits no SQLite INTEGER and no field of ours


def _shown(text: str) -> str:
    return text if len(text) <= 24 else text[:24] + "..."


def _int(text: str) -> int:
    # Python refuses more than 4300 digits with a ValueError of its own; 20 digits are the most
    # a 64-bit integer has, so the length check comes first and costs nothing.
    value = int(text) if len(text) <= 20 else None
    if value is None or not -MAX_JSON_INT - 1 <= value <= MAX_JSON_INT:
        raise ValidationError("body", f"holds the integer {_shown(text)}; "
                                      f"integers must be within +-{MAX_JSON_INT}")
    return value


def _float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):  # 1e400 parses as infinity
        raise ValidationError("body", f"holds the number {_shown(text)}, too large for a 64-bit float")
    return value


def _constant(name: str) -> float:
    raise ValidationError("body", f"holds {name}, which is not JSON (RFC 8259 has no NaN or Infinity)")


def _depth_ok(doc: Any, limit: int) -> bool:
    """Whether `doc` nests at most `limit` containers deep; one pass per level, containers only."""
    level = [doc] if isinstance(doc, (dict, list)) else []
    for _ in range(limit):
        if not level:
            return True
        level = [v for c in level for v in (c.values() if isinstance(c, dict) else c) if isinstance(v, (dict, list))]
    return not level


def parse_json(data: str | bytes) -> Any:
    """A JSON document through the door (module docstring), or ValidationError naming `body`."""
    try:
        doc = json.loads(data, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except RecursionError:  # the decoder's own guard, far below a 1 MiB body's possible depth
        raise ValidationError("body", f"is nested more than {MAX_JSON_DEPTH} levels deep") from None
    except ValidationError:  # a number or constant refused by the door (a ValueError too)
        raise
    except (ValueError, TypeError) as exc:  # UnicodeDecodeError is a ValueError
        raise ValidationError("body", f"is not valid JSON: {exc}"[:300]) from None
    if not _depth_ok(doc, MAX_JSON_DEPTH):
        raise ValidationError("body", f"is nested more than {MAX_JSON_DEPTH} levels deep")
    return doc


class BoundedJSONProvider(DefaultJSONProvider):
    """Flask's JSON with `parse_json` as its reader: request.get_json() anywhere passes the door."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return parse_json(s)


def json_body() -> Any:
    if not request.is_json:
        raise ValidationError("body", "must be a JSON document with Content-Type: application/json")
    body = parse_json(request.get_data(cache=True))
    if body is None:
        raise ValidationError("body", "must be a JSON document, not null")
    return body


def _declared_keys_only(body: dict, model: type[Body]) -> None:
    unknown = body.keys() - model.model_fields.keys()
    if unknown:
        raise ValidationError(sorted(unknown)[0] or '""', model.unknown)


def json_object(model: type[Body]) -> dict:
    """The body as a JSON object holding no key `model` does not declare; else a 400 naming the key."""
    body = json_body()
    if not isinstance(body, dict):
        raise ValidationError("body", f"must be a JSON object with {' and '.join(model.model_fields)}")
    _declared_keys_only(body, model)
    return body


def json_batch(model: type[Body], limit: int) -> list:
    """The body's one list (a batch of objects, `model`'s only field), at most `limit` long; else a 400
    naming the list (or a key the body should not hold)."""
    (key,) = model.model_fields
    body = json_body()
    raw = body.get(key) if isinstance(body, dict) else None
    if not isinstance(raw, list):  # named first when missing: {"event": []} is about `events`
        raise ValidationError(key, f"must be a list of {key[:-1]} objects")
    if len(raw) > limit:
        raise ValidationError(key, f"at most {limit} {key} per request")
    _declared_keys_only(body, model)
    return raw
