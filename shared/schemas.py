"""Events and items: the frozen dataclasses the code works with, and validation that names the bad field.

Events are what devices send and the server logs; items are catalogue entries. Both travel as
JSON objects (docs/wire-format.md). What a valid one is, is declared once, as pydantic models in
shared/models.py (the OpenAPI document is generated from them); `validate_*` runs a model over an
untrusted dict and returns a dataclass, or raises ValidationError with the field and the words the
model's `Says` gives.

`wire=True` is the JSON contract exactly (POST /v1/events, POST /v1/items): ids are strings, and a
number without a fraction is an integer (7.0 is 7, as JSON Schema has it). Python callers (the
importer, the device SDK) keep Python's types and two old conveniences: an integer id is taken as
its digits, and a tuple of categories as a list.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from functools import cache
from typing import Annotated, Any, Union, cast, get_args, get_origin

import pydantic
from pydantic import BaseModel, TypeAdapter

from .errors import ValidationError
from .models import (
    CONTEXT_KEYS,
    EVENT_FIELDS,
    EVENT_ORDER,
    EVENT_ORDER_REST,
    EVENT_TYPES,
    ID_PATTERN,
    MAX_ATTRIBUTES,
    MAX_ITEM_ID,
    MAX_ITEM_ID_BYTES,
    MAX_PRICE,
    MAX_QUERY_LEN,
    MAX_STOCK,
    MAX_TIMESTAMP,
    PRODUCT_FIELDS,
    PRODUCT_ID_PATTERN,
    PRODUCT_ID_SAYS,
    SOURCES,
    UNICODE_TEXT,
    WIRE,
    EventContext,
    Id,
    Product,
    ProductEvent,
    ProductId,
    Says,
    SearchEvent,
)

__all__ = ["CONTEXT_KEYS", "EVENT_TYPES", "ID_RE", "ITEM_ID_RE", "MAX_ATTRIBUTES", "MAX_ITEM_ID", "MAX_ITEM_ID_BYTES",
           "MAX_PRICE", "MAX_QUERY_LEN", "MAX_STOCK", "MAX_TIMESTAMP", "SOURCES", "Event", "Item", "category_levels",
           "check_id", "check_item_id", "check_item_index", "refusal", "validate_event", "validate_item"]

# The models' patterns, for code that checks many strings at once (importers); use with fullmatch.
ID_RE = re.compile(ID_PATTERN)
ITEM_ID_RE = re.compile(PRODUCT_ID_PATTERN)


@dataclass(frozen=True)
class Event:
    event_id: str
    user_id: str
    device_id: str
    type: str
    timestamp: float
    # The marketplace's product id (str) as validated from the wire; inside the server, once
    # resolved against the catalogue, the store's dense index (int).
    item_id: str | int | None = None
    query: str | None = None
    session_id: str = ""
    # Where the event happened, for monitoring per segment: which path served
    # the list (server/edge/cache/popular), the model version, the platform,
    # the connectivity state. Sorted (key, value) pairs so the event stays hashable.
    context: tuple[tuple[str, str], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The wire form: absent optional fields are left out, so it validates again."""
        d = {k: v for k, v in asdict(self).items() if v is not None and v != "" and k != "context"}
        if self.context:
            d["context"] = dict(self.context)
        return d


@dataclass(frozen=True)
class Item:
    """A product. `item_id` is the store's dense index (0 until the store assigns one);
    `sku` is the marketplace's own id, the one every API, file and device sees."""

    item_id: int
    title: str
    category: str
    year: int | None = None
    price: float = 0.0
    in_stock: bool = True
    categories: tuple[str, ...] = field(default_factory=tuple)
    sku: str = ""
    currency: str = ""
    attributes: tuple[tuple[str, str], ...] = ()
    created_at: float | None = None

    @property
    def external_id(self) -> str:
        """The marketplace's id (a catalogue from before string ids used the index's digits)."""
        return self.sku or str(self.item_id)

    def to_dict(self) -> dict[str, Any]:
        """The wire form: `item_id` is the marketplace's id; the dense index stays inside the server."""
        d = asdict(self)
        d["item_id"] = self.external_id
        del d["sku"]
        d["categories"] = list(self.categories)
        d["attributes"] = dict(self.attributes)
        return d


# --- pydantic's errors in the contract's words ---

def _is_type_error(kind: str) -> bool:
    return kind.endswith(("_type", "_parsing")) or kind in ("int_from_float", "model_attributes_type")


@cache
def _says_in(annotation: Any) -> Says | None:
    """The Says an annotation carries, looking through Annotated and unions (X | None)."""
    if get_origin(annotation) is Annotated:
        args = get_args(annotation)
        found = next((m for m in args[1:] if isinstance(m, Says)), None)
        return found or _says_in(args[0])
    if get_origin(annotation) in (Union, type(int | None)):
        return next((s for s in map(_says_in, get_args(annotation)) if s is not None), None)
    return None


@cache
def _says(model: type[BaseModel], name: str) -> Says | None:
    info = model.model_fields.get(name)
    if info is None:
        return None
    return next((m for m in info.metadata if isinstance(m, Says)), None) or _says_in(cast(Any, info.annotation))


def _words(says: Says, errors: list[Any], value: Any) -> str:
    """The message for one field from its errors (several when the field is a union of types)."""
    kinds = [e["type"] for e in errors]
    if "missing" in kinds or value is None:
        return says.required
    if "string_unicode" in kinds:
        return UNICODE_TEXT
    for e in errors:
        if e["type"] == "explained":  # a validator's own words (the id's UTF-8 length)
            return str(e["msg"])
        if e["type"] in says.by_error:
            return says.by_error[e["type"]]
    if all(_is_type_error(k) for k in kinds):
        return says.wrong_type or says.invalid
    if says.as_integer and isinstance(value, int) and not isinstance(value, bool):
        return says.as_integer
    return says.invalid


def _nested(model: type[BaseModel], name: str, rest: tuple, errors: list[Any], value: Any) -> ValidationError:
    """An error inside a field that is itself an object (context, attributes, categories)."""
    if name == "context" and rest and isinstance(rest[0], str) and isinstance(value, Mapping):
        key = rest[0]
        inner = [e for e in errors if e["loc"][1:2] == (key,)]
        if inner[0]["type"] == "extra_forbidden":
            return ValidationError(f"context.{key}", EventContext.unknown.format(keys=", ".join(CONTEXT_KEYS)))
        says = _says(EventContext, key)
        assert says is not None
        return ValidationError(f"context.{key}", _words(says, inner, value.get(key)))
    if name == "attributes" and rest and isinstance(value, Mapping):
        key = rest[0]
        if rest[-1] == "[key]":
            return ValidationError("attributes", "names must be strings of 1-64 characters")
        inner = [e for e in errors if e["loc"][1:2] == (key,)]
        says = _says(model, name)
        assert says is not None
        return ValidationError(f"attributes.{key}", _words(says, inner, value.get(key)))
    says = _says(model, name)
    assert says is not None
    if name == "attributes" and not isinstance(value, Mapping):
        return ValidationError("attributes", "must be a JSON object of names to strings or numbers")
    if name == "attributes" and len(value) > MAX_ATTRIBUTES:
        return ValidationError("attributes", f"must have at most {MAX_ATTRIBUTES} entries")
    return ValidationError(name, _words(says, errors, value))


def refusal(exc: pydantic.ValidationError, model: type[BaseModel], obj: Mapping[str, Any],
            order: tuple[str, ...] = ()) -> ValidationError:
    """The first problem (fields in `order` first, then the model's own order) as a ValidationError
    naming the field, in the words of its Says."""
    errors: list[Any] = exc.errors(include_url=False)
    fields = list(order) + [f for f in model.model_fields if f not in order]

    def rank(e: Any) -> int:
        name = str(e["loc"][0]) if e["loc"] else ""
        if e["type"] == "missing" and f"{name}:missing" in fields:
            return fields.index(f"{name}:missing")
        return fields.index(name) if name in fields else -1

    first = min(errors, key=rank)
    if not first["loc"]:
        return ValidationError(model.__name__.lower(), f"must be a JSON object, got {type(obj).__name__}")
    name = str(first["loc"][0])
    mine = [e for e in errors if e["loc"][:1] == (name,)]
    if first["type"] == "extra_forbidden" and len(first["loc"]) == 1:
        return ValidationError(name or '""', getattr(model, "unknown", "is not a known field"))
    value = obj.get(name)
    nested = [e for e in mine if len(e["loc"]) > 1 and not isinstance(value, (str, int, float))]
    if nested:
        return _nested(model, name, tuple(nested[0]["loc"][1:]), nested, value)
    says = _says(model, name)
    if says is None:  # a field without words of its own: say pydantic's
        return ValidationError(name, str(first["msg"]))
    return ValidationError(name, _words(says, mine, value))


def _require_mapping(obj: Any, what: str) -> Mapping[str, Any]:
    if type(obj) is not dict and not isinstance(obj, Mapping):  # a plain dict skips the slow ABC check
        raise ValidationError(what, f"must be a JSON object, got {type(obj).__name__}")
    return obj


def _unknown_first(obj: Mapping[str, Any], known: frozenset[str], model: type[BaseModel]) -> None:
    unknown = obj.keys() - known
    if unknown:
        first = sorted(map(str, unknown))[0]
        raise ValidationError(first or '""', cast(Any, model).unknown)  # an empty key is named visibly


_ID_ADAPTER: TypeAdapter[str] = TypeAdapter(Id)
_PRODUCT_ID_ADAPTER: TypeAdapter[str | int] = TypeAdapter(ProductId)
_ID_SAYS = _says_in(Id)


def finite_number(value: Any) -> float | None:
    """`value` as a float when it is an int or a float (not a bool) and finite as a float, else None. For
    numbers read from JSON that a caller must not trust to be sane: an integer of 400 digits overflows
    a float, and math.isfinite raises on it rather than answering."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        x = float(value)
    except OverflowError:
        return None
    return x if math.isfinite(x) else None


def check_id(name: str, value: Any) -> str:
    """An identifier (user, device, event, session) as a safe string, or ValidationError.
    An integer is taken as its digits (a Python caller's convenience; the JSON contract wants strings)."""
    if type(value) is int:
        value = str(value)
    try:
        return _ID_ADAPTER.validate_python(value)
    except pydantic.ValidationError as exc:
        assert _ID_SAYS is not None
        raise ValidationError(name, _words(_ID_SAYS, exc.errors(include_url=False), value)) from None


def check_item_id(value: Any, name: str = "item_id", *, wire: bool = False) -> str:
    """A product id as the marketplace's string (an integer is taken as its decimal digits), or ValidationError.
    `wire`: a JSON value, where 7.0 is the integer 7."""
    try:
        return str(_PRODUCT_ID_ADAPTER.validate_python(value, context=WIRE if wire else None))
    except pydantic.ValidationError as exc:
        words = _words(PRODUCT_ID_SAYS, exc.errors(include_url=False), value) if value is not None else None
        raise ValidationError(name, words or str(PRODUCT_ID_SAYS.wrong_type)) from None


def check_item_index(value: Any, name: str = "item_id") -> int:
    """A dense item index as a positive int32 (packed records carry int32), or ValidationError."""
    if isinstance(value, bool):
        raise ValidationError(name, "must be an integer")
    # ASCII digits only: str.isdigit() also accepts "²" (int() then fails) and
    # other scripts' digits, which would make one id spellable many ways.
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if not isinstance(value, int):
        raise ValidationError(name, "must be an integer")
    if not 0 < value <= MAX_ITEM_ID:
        raise ValidationError(name, f"must be between 1 and {MAX_ITEM_ID}")
    return value


_ID_FIELDS = ("event_id", "user_id", "device_id", "session_id")


def _loosened_event(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A Python caller's event with integer ids and context values as their digits."""
    out = dict(obj)
    for name in _ID_FIELDS:
        if type(out.get(name)) is int:
            out[name] = str(out[name])
    context = out.get("context")
    if isinstance(context, Mapping) and any(type(v) is int for v in context.values()):
        out["context"] = {k: str(v) if type(v) is int else v for k, v in context.items()}
    return out


def validate_event(obj: Any, *, wire: bool = False) -> Event:
    """Check an untrusted event dict and return an Event, or raise ValidationError.

    `wire`: the JSON contract exactly (ids must be strings); else integer ids are taken as digits."""
    obj = _require_mapping(obj, "event")
    _unknown_first(obj, EVENT_FIELDS, ProductEvent)
    etype = obj.get("type")
    if etype not in EVENT_TYPES:
        raise ValidationError("type", f"must be one of {', '.join(EVENT_TYPES)}")
    if not wire:
        obj = _loosened_event(obj)
    model: type[ProductEvent] | type[SearchEvent] = SearchEvent if etype == "search" else ProductEvent
    try:
        ev = model.model_validate(obj, context=WIRE if wire else None)
    except pydantic.ValidationError as exc:
        err = refusal(exc, model, obj, EVENT_ORDER["search" if etype == "search" else "other"] + EVENT_ORDER_REST)
        if err.field == "item_id" and obj.get("item_id") is None and etype != "search":
            err = ValidationError("item_id", f"is required for a {etype} event")
        raise err from None
    # The context as sent (its keys and values are the model's, checked above): cheaper than a dump.
    context = obj.get("context") if ev.context is not None else None
    return Event(
        event_id=ev.event_id,
        user_id=ev.user_id,
        device_id=ev.device_id,
        type=etype,
        timestamp=float(ev.timestamp),
        item_id=None if ev.item_id is None else str(ev.item_id),
        query=ev.query.strip() if ev.query is not None else None,
        session_id=ev.session_id or "",
        context=() if not context else tuple(sorted((k, v) for k, v in context.items() if v is not None)),
    )


CATEGORY_SEPARATOR = " > "  # a category path's levels: "Home > Kitchen > Knives"


def category_levels(path: str) -> tuple[str, ...]:
    """A category path's cumulative levels, broadest first: "A > B" -> ("A", "A > B")."""
    parts = [p.strip() for p in path.split(">") if p.strip()]
    return tuple(CATEGORY_SEPARATOR.join(parts[: k + 1]) for k in range(len(parts)))


def validate_item(obj: Any, *, wire: bool = False) -> Item:
    """Check an untrusted product dict and return an Item, or raise ValidationError.

    The Item's index is 0: the store assigns one (stable for the product's id) when it is written.
    `wire`: the JSON contract exactly; else a tuple of categories is taken as a list."""
    obj = _require_mapping(obj, "item")
    _unknown_first(obj, PRODUCT_FIELDS, Product)
    if not wire and isinstance(obj.get("categories"), tuple):
        obj = {**obj, "categories": list(obj["categories"])}
    if "item_id" not in obj or obj["item_id"] is None:  # the product's id is named first, as a missing string
        raise ValidationError("item_id", str(PRODUCT_ID_SAYS.wrong_type))
    try:
        p = Product.model_validate(obj, context=WIRE if wire else None)
    except pydantic.ValidationError as exc:
        raise refusal(exc, Product, obj) from None
    levels = category_levels(p.category)
    in_stock = p.in_stock if p.stock is None else p.stock > 0
    cats = levels if p.categories is None else tuple(c.strip() for c in p.categories)
    attributes = tuple(sorted((k, str(v)) for k, v in (p.attributes or {}).items()))
    return Item(0, p.title.strip(), levels[-1], p.year, float(p.price), in_stock, cats, sku=str(p.item_id),
                currency=p.currency or "", attributes=attributes,
                created_at=None if p.created_at is None else float(p.created_at))
