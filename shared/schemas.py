"""Event and item schemas with validation that names the bad field.

Events are what devices send and the server logs; items are catalogue entries.
Both travel as JSON objects (see docs/wire-format.md); `validate_*` turns an
untrusted dict into a frozen dataclass or raises ValidationError.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import ValidationError

EVENT_TYPES = ("view", "click", "search", "add_to_cart", "purchase", "impression")

# Identifiers are opaque to the server but must be safe to log, index and
# put in URLs, so they are restricted to a conservative alphabet.
ID_RE = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")  # used with fullmatch: "$" would let a trailing newline in
# A product's id is the marketplace's own (a SKU, a slug, a title): any printable text of 1-64
# characters without surrounding spaces. Inside the server and in packed records a product is a
# dense index the store assigns (1..MAX_ITEM_ID, stable across retrains); see server/stores/base.py.
ITEM_ID_RE = re.compile(r"[^\x00-\x1f\x7f\s](?:[^\x00-\x1f\x7f]{0,62}[^\x00-\x1f\x7f\s])?")
MAX_ITEM_ID = 2**31 - 1  # item indexes are packed as int32 on the wire
MAX_QUERY_LEN = 256
CONTEXT_KEYS = ("source", "model_version", "candidates_version", "platform", "connectivity", "segment")
SOURCES = ("server", "edge", "cache", "popular")
# 2100-01-01; timestamps are unix seconds. Old data (MovieLens is 1997) is fine.
MAX_TIMESTAMP = 4102444800.0


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


def _require_mapping(obj: Any, what: str) -> Mapping[str, Any]:
    if type(obj) is not dict and not isinstance(obj, Mapping):  # a plain dict skips the slow ABC check
        raise ValidationError(what, f"must be a JSON object, got {type(obj).__name__}")
    return obj


def check_id(name: str, value: Any) -> str:
    """An identifier (user, device, event, session) as a safe string, or ValidationError."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValidationError(name, "must be a string")
    value = str(value)
    if not ID_RE.fullmatch(value):
        raise ValidationError(name, "must be 1-64 characters of A-Z a-z 0-9 _ . : -")
    return value


def _id(obj: Mapping[str, Any], name: str, required: bool = True) -> str:
    value = obj.get(name)
    if value is None:
        if required:
            raise ValidationError(name, "is required")
        return ""
    return check_id(name, value)


def check_item_id(value: Any, name: str = "item_id") -> str:
    """A product id as the marketplace's string (an integer is taken as its decimal digits), or ValidationError."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValidationError(name, "must be a string (the product's own id)")
    if isinstance(value, int):
        if not 0 < value <= MAX_ITEM_ID:
            raise ValidationError(name, f"as an integer must be between 1 and {MAX_ITEM_ID}")
        return str(value)
    if not ITEM_ID_RE.fullmatch(value):
        raise ValidationError(name, "must be 1-64 printable characters, without leading or trailing spaces")
    _utf8(name, value, MAX_ITEM_ID_BYTES)
    return value


MAX_ITEM_ID_BYTES = 255  # the signed item entry carries the id with a one-byte length


def _utf8(name: str, value: str, max_bytes: int | None = None) -> None:
    """Text must encode as UTF-8 (JSON can carry a lone surrogate that no store can hold)."""
    try:
        n = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValidationError(name, "must be valid Unicode text (it holds a lone surrogate)") from None
    if max_bytes is not None and n > max_bytes:
        raise ValidationError(name, f"must be at most {max_bytes} bytes of UTF-8")


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


def _number(value: Any, name: str, lo: float, hi: float, what: str) -> float:
    """A JSON number within [lo, hi] as a float, or ValidationError saying `what` it must be.

    Every numeric field goes through here: the range check on an int comes before float(),
    which overflows on 10**400, and math.isfinite, which overflows on an int past 1e308.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(name, f"must be {what}")
    if isinstance(value, int) and not lo <= value <= hi:
        raise ValidationError(name, f"must be {what}")
    value = float(value)
    if not math.isfinite(value) or not lo <= value <= hi:
        raise ValidationError(name, f"must be {what}")
    return value


def _timestamp(value: Any, name: str = "timestamp") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(name, "must be a number of unix seconds")
    return _number(value, name, 0, MAX_TIMESTAMP, "unix seconds between 1970 and 2100")


_EVENT_FIELDS = frozenset(Event.__dataclass_fields__)


def validate_event(obj: Any) -> Event:
    """Check an untrusted event dict and return an Event, or raise ValidationError."""
    obj = _require_mapping(obj, "event")
    unknown = obj.keys() - _EVENT_FIELDS
    if unknown:
        first = sorted(map(str, unknown))[0]
        raise ValidationError(first or '""', "is not a known event field")  # an empty key is named visibly
    etype = obj.get("type")
    if etype not in EVENT_TYPES:
        raise ValidationError("type", f"must be one of {', '.join(EVENT_TYPES)}")
    item_id = obj.get("item_id")
    query = obj.get("query")
    if etype == "search":
        if not isinstance(query, str) or not query.strip():
            raise ValidationError("query", "is required for a search event")
        if len(query) > MAX_QUERY_LEN:
            raise ValidationError("query", f"must be at most {MAX_QUERY_LEN} characters")
        _utf8("query", query)
        item_id = None if item_id is None else check_item_id(item_id)
    else:
        if item_id is None:
            raise ValidationError("item_id", f"is required for a {etype} event")
        item_id = check_item_id(item_id)
        if query is not None:
            raise ValidationError("query", "is only allowed on search events")
    if "timestamp" not in obj:
        raise ValidationError("timestamp", "is required")
    return Event(
        event_id=_id(obj, "event_id"),
        user_id=_id(obj, "user_id"),
        device_id=_id(obj, "device_id"),
        type=etype,
        timestamp=_timestamp(obj["timestamp"]),
        item_id=item_id,
        query=query.strip() if isinstance(query, str) else None,
        session_id=_id(obj, "session_id", required=False),
        context=_context(obj.get("context")),
    )


def _context(value: Any) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise ValidationError("context", "must be a JSON object")
    out = []
    for key, val in value.items():
        if key not in CONTEXT_KEYS:
            raise ValidationError(f"context.{key}", f"is not a known context key ({', '.join(CONTEXT_KEYS)})")
        if isinstance(val, bool) or not isinstance(val, (str, int)) or not 0 < len(str(val)) <= 64:
            raise ValidationError(f"context.{key}", "must be a string of 1-64 characters")
        if key == "source" and val not in SOURCES:
            raise ValidationError("context.source", f"must be one of {', '.join(SOURCES)}")
        out.append((key, str(val)))
    return tuple(sorted(out))


MAX_ATTRIBUTES = 32
CATEGORY_SEPARATOR = " > "  # a category path's levels: "Home > Kitchen > Knives"
MAX_PRICE = 1e9  # bounded at the door: prices are packed as f32 and summed into revenue
MAX_STOCK = 10**12  # units; only its sign is kept (in_stock), but no field is unbounded


def category_levels(path: str) -> tuple[str, ...]:
    """A category path's cumulative levels, broadest first: "A > B" -> ("A", "A > B")."""
    parts = [p.strip() for p in path.split(">") if p.strip()]
    return tuple(CATEGORY_SEPARATOR.join(parts[: k + 1]) for k in range(len(parts)))


def _attributes(value: Any) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise ValidationError("attributes", "must be a JSON object of names to strings or numbers")
    if len(value) > MAX_ATTRIBUTES:
        raise ValidationError("attributes", f"must have at most {MAX_ATTRIBUTES} entries")
    out = []
    for key, val in value.items():
        if not isinstance(key, str) or not 0 < len(key) <= 64:
            raise ValidationError("attributes", "names must be strings of 1-64 characters")
        if isinstance(val, bool) or not isinstance(val, (str, int, float)) or len(str(val)) > 256:
            raise ValidationError(f"attributes.{key}", "must be a string or a number of at most 256 characters")
        _utf8(f"attributes.{key}", key + str(val))
        out.append((key, str(val)))
    return tuple(sorted(out))


def validate_item(obj: Any) -> Item:
    """Check an untrusted product dict and return an Item, or raise ValidationError.

    The Item's index is 0: the store assigns one (stable for the product's id) when it is written.
    """
    obj = _require_mapping(obj, "item")
    sku = check_item_id(obj.get("item_id"))
    title = obj.get("title")
    if not isinstance(title, str) or not title.strip() or len(title) > 512:
        raise ValidationError("title", "must be a non-empty string of at most 512 characters")
    _utf8("title", title)
    category = obj.get("category")
    if not isinstance(category, str) or not category.strip() or len(category) > 256:
        raise ValidationError("category", "must be a non-empty string of at most 256 characters "
                                          "(a path: \"Home > Kitchen\")")
    _utf8("category", category)
    levels = category_levels(category)
    if not levels or any(len(c) > 256 for c in levels):
        raise ValidationError("category", "must name at least one level")
    year = obj.get("year")
    if year is not None and (isinstance(year, bool) or not isinstance(year, int) or not 1800 <= year <= 2100):
        raise ValidationError("year", "must be an integer year between 1800 and 2100")
    price = _number(obj.get("price", 0.0), "price", 0, MAX_PRICE, f"a number between 0 and {MAX_PRICE:g}")
    currency = obj.get("currency") or ""
    if not isinstance(currency, str) or (currency and not re.fullmatch(r"[A-Z]{3}", currency)):
        raise ValidationError("currency", "must be a three-letter ISO 4217 code such as EUR")
    in_stock = obj.get("in_stock", True)
    if not isinstance(in_stock, bool):
        raise ValidationError("in_stock", "must be true or false")
    stock = obj.get("stock")
    if stock is not None:
        if isinstance(stock, bool) or not isinstance(stock, int) or not 0 <= stock <= MAX_STOCK:
            raise ValidationError("stock", f"must be an integer between 0 and {MAX_STOCK} (units available)")
        in_stock = stock > 0
    cats = obj.get("categories", list(levels))
    if not isinstance(cats, (list, tuple)) or len(cats) > 32 or \
            not all(isinstance(c, str) and c.strip() and len(c) <= 256 for c in cats):
        raise ValidationError("categories", "must be a list of at most 32 non-empty strings")
    for c in cats:
        _utf8("categories", c)
    created = obj.get("created_at")
    created_at = None if created is None else _timestamp(created, "created_at")
    return Item(0, title.strip(), levels[-1], year, price, in_stock, tuple(c.strip() for c in cats),
                sku=sku, currency=currency, attributes=_attributes(obj.get("attributes")), created_at=created_at)
