"""The request contract, declared once: pydantic models of the events and products clients send.

Each field's type carries its bounds, which pydantic checks and which become the OpenAPI
document's `components/schemas` (server/api/openapi_spec.py), and a `Says`: the words of the
answer that refuses a value. shared/schemas.py turns a validated model into the frozen
dataclasses the rest of the code works with, and a pydantic error into a ValidationError that
names the field.

Patterns are spelled with explicit character classes and `\\uXXXX` escapes, never `\\s` or `\\d`:
Python's `re`, pydantic's Rust regex and a client's ECMA-262 regex then agree on every string
(their `\\s` differ on U+001C-U+001F and U+FEFF; Python's `$` also matches before a final
newline, Rust's and ECMA's do not).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationInfo,
)
from pydantic_core import PydanticCustomError

EVENT_TYPES = ("view", "click", "search", "add_to_cart", "purchase", "impression")
PRODUCT_EVENT_TYPES = tuple(t for t in EVENT_TYPES if t != "search")
SOURCES = ("server", "edge", "cache", "popular")
MAX_ITEM_ID = 2**31 - 1  # item indexes are packed as int32 on the wire
MAX_ITEM_ID_BYTES = 255  # the signed item entry carries the id with a one-byte length
MAX_QUERY_LEN = 256
# 2100-01-01; timestamps are unix seconds. Old data (MovieLens is 1997) is fine.
MAX_TIMESTAMP = 4102444800.0
MAX_ATTRIBUTES = 32
MAX_PRICE = 1e9  # bounded at the door: prices are packed as f32 and summed into revenue
MAX_STOCK = 10**12  # units; only its sign is kept (in_stock), but no field is unbounded
MAX_JSON_INT = 2**63 - 1  # the JSON door's bound (server/api/params.py): no field of ours holds more

# Identifiers (user, device, event, session) are opaque but must be safe to log, index and put in URLs.
ID_PATTERN = r"^[A-Za-z0-9_.:\-]{1,64}$"
# Python's whitespace (str.isspace, str.strip) beyond the C0 controls, spelled out.
_WIDE_SPACE = r"\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_SPACE = r"\u0009-\u000d\u001c-\u0020" + _WIDE_SPACE
# A product's id is the marketplace's own (a SKU, a slug, a title): 1-64 characters, no control
# characters, no whitespace at either end.
_EDGE = rf"[^\u0000-\u0020\u007f{_WIDE_SPACE}]"
_INNER = r"[^\u0000-\u001f\u007f]"
PRODUCT_ID_PATTERN = rf"^{_EDGE}(?:{_INNER}{{0,62}}{_EDGE})?$"
NOT_BLANK = rf"[^{_SPACE}]"  # holds something str.strip() keeps
HAS_LEVEL = rf"[^>{_SPACE}]"  # a category path names at least one level ("A > B"; not " > ")

ID_TEXT = "must be 1-64 characters of A-Z a-z 0-9 _ . : -"
UNICODE_TEXT = "must be valid Unicode text (it holds a lone surrogate)"


@dataclass(frozen=True, eq=False)  # hashed by identity: annotations holding it are hashed
class Says:
    """What a field must be, in the words of the answer that refuses it (Annotated metadata;
    pydantic leaves it alone). `invalid`: a value of the right type out of bounds; `wrong_type`: a
    value of another JSON type (default: `invalid`); `as_integer`: an integer out of range, where
    the field also takes a string; `by_error`: words for one pydantic error type."""

    invalid: str
    wrong_type: str | None = None
    as_integer: str | None = None
    required: str = "is required"
    by_error: dict[str, str] = field(default_factory=dict)


def _fits_an_item_entry(value: str) -> str:
    if len(value.encode("utf-8")) > MAX_ITEM_ID_BYTES:
        raise PydanticCustomError("explained", f"must be at most {MAX_ITEM_ID_BYTES} bytes of UTF-8")
    return value


def _whole_on_the_wire(value: Any, info: ValidationInfo) -> Any:
    """On the wire a JSON number with no fraction is an integer (JSON Schema says so, and a JavaScript
    client cannot even write 7 as anything but 7): 7.0 is taken as 7. A Python caller's float stays a float."""
    if type(value) is float and info.context and info.context.get("wire") and value.is_integer():
        return int(value)
    return value


WholeOnTheWire = BeforeValidator(_whole_on_the_wire)
WIRE = {"wire": True}  # the validation context of a JSON request (model_validate(..., context=WIRE))

Id = Annotated[str, Field(pattern=ID_PATTERN, min_length=1, max_length=64), Says(ID_TEXT, "must be a string")]
ProductIdText = Annotated[str, Field(pattern=PRODUCT_ID_PATTERN, min_length=1, max_length=64),
                          AfterValidator(_fits_an_item_entry)]
ProductIdNumber = Annotated[StrictInt, Field(ge=1, le=MAX_ITEM_ID), WholeOnTheWire]
PRODUCT_ID_SAYS = Says("must be 1-64 printable characters, without leading or trailing spaces",
                       "must be a string (the product's own id)", f"as an integer must be between 1 and {MAX_ITEM_ID}")
# The marketplace's own product id; an integer is taken as its decimal digits.
ProductId = Annotated[ProductIdText | ProductIdNumber, PRODUCT_ID_SAYS,
                      Field(description="the marketplace's own product id; an integer is taken as its decimal digits")]
Timestamp = Annotated[float, Field(ge=0, le=MAX_TIMESTAMP, allow_inf_nan=False, description="unix seconds"),
                      Says("must be unix seconds between 1970 and 2100", "must be a number of unix seconds")]
ContextText = Annotated[str, Field(min_length=1, max_length=64), Says("must be a string of 1-64 characters")]

_STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, regex_engine="rust-regex")


class EventContext(BaseModel):
    """Where an event happened, for monitoring per segment: which path served the list, the model
    version, the platform, the connectivity state."""

    model_config = _STRICT
    unknown: ClassVar[str] = "is not a known context key ({keys})"

    source: Annotated[Literal["server", "edge", "cache", "popular"] | None,
                      Says(f"must be one of {', '.join(SOURCES)}")] = None
    model_version: ContextText | None = None
    candidates_version: ContextText | None = None
    platform: ContextText | None = None
    connectivity: ContextText | None = None
    segment: ContextText | None = None


CONTEXT_KEYS = tuple(EventContext.model_fields)


class _EventFields(BaseModel):
    model_config = _STRICT
    unknown: ClassVar[str] = "is not a known event field"

    event_id: Id = Field(description="the client's id for the event: a retry with the same content is a duplicate")
    user_id: Id
    device_id: Id
    timestamp: Timestamp
    session_id: Id | None = None
    context: Annotated[EventContext | None, Says("must be a JSON object")] = None


class ProductEvent(_EventFields):
    """A view, click, add to cart, purchase or impression of one product."""

    type: Literal["view", "click", "add_to_cart", "purchase", "impression"]
    item_id: ProductId
    query: Annotated[None, Says("is only allowed on search events")] = None


class SearchEvent(_EventFields):
    """A search; `item_id` names the product the search led to, if any."""

    type: Literal["search"]
    query: Annotated[str, Field(max_length=MAX_QUERY_LEN, pattern=NOT_BLANK),
                     Says(f"must be at most {MAX_QUERY_LEN} characters", "is required for a search event",
                          required="is required for a search event",
                          by_error={"string_pattern_mismatch": "is required for a search event"})]
    item_id: ProductId | None = None


# What POST /v1/events takes, one per event: the `type` says which.
WireEvent = Annotated[ProductEvent | SearchEvent, Field(discriminator="type")]
EVENT_FIELDS = frozenset(ProductEvent.model_fields) | frozenset(SearchEvent.model_fields)
# The order validate_event has always named problems in (server/data/checks.py follows it too):
# the item or query first, then a missing timestamp, the ids, the timestamp's value, the rest.
EVENT_ORDER = {"search": ("query", "item_id"), "other": ("item_id", "query")}
EVENT_ORDER_REST = ("timestamp:missing", "event_id", "user_id", "device_id", "timestamp", "session_id", "context")

Text = Annotated[str, Field(max_length=256, pattern=NOT_BLANK)]
# A product attribute's value: text, or a number within the JSON door's integer range (a number spelled
# as an integer past it is refused at the door, so the bound holds for every spelling).
_WITHIN_INT64 = Field(ge=-MAX_JSON_INT - 1, le=MAX_JSON_INT, allow_inf_nan=False)
AttributeValue = Annotated[str, Field(max_length=256)] | Annotated[StrictInt, _WITHIN_INT64] | Annotated[
    StrictFloat, _WITHIN_INT64]
TITLE_TEXT = "must be a non-empty string of at most 512 characters"
CATEGORY_TEXT = 'must be a non-empty string of at most 256 characters (a path: "Home > Kitchen")'


class Product(BaseModel):
    """A product as POST /v1/items takes it. A change to a product the catalogue holds may name only
    `item_id` and the fields that change; a new product needs `title` and `category`."""

    model_config = _STRICT
    unknown: ClassVar[str] = "is not a known product field"

    item_id: ProductId
    title: Annotated[str, Field(max_length=512, pattern=NOT_BLANK),
                     Says(TITLE_TEXT, required=TITLE_TEXT)]
    category: Annotated[str, Field(max_length=256, pattern=HAS_LEVEL,
                                   description='a path of levels, broadest first: "Home > Kitchen"'),
                        Says(CATEGORY_TEXT, required=CATEGORY_TEXT,
                             by_error={"string_pattern_mismatch": "must name at least one level"})]
    year: Annotated[StrictInt | None, Field(ge=1800, le=2100), WholeOnTheWire,
                    Says("must be an integer year between 1800 and 2100")] = None
    price: Annotated[float, Field(ge=0, le=MAX_PRICE, allow_inf_nan=False),
                     Says(f"must be a number between 0 and {MAX_PRICE:g}")] = 0.0
    currency: Annotated[str | None, Field(pattern=r"^(?:[A-Z]{3})?$", description="ISO 4217"),
                        Says("must be a three-letter ISO 4217 code such as EUR")] = None
    in_stock: Annotated[StrictBool, Says("must be true or false")] = True
    stock: Annotated[StrictInt | None, Field(ge=0, le=MAX_STOCK, description="units available; sets in_stock"),
                     WholeOnTheWire,
                     Says(f"must be an integer between 0 and {MAX_STOCK} (units available)")] = None
    categories: Annotated[list[Text] | None, Field(max_length=32, description="default: the category's levels"),
                          Says("must be a list of at most 32 non-empty strings")] = None
    created_at: Timestamp | None = None
    attributes: Annotated[
        dict[Annotated[str, Field(min_length=1, max_length=64)], AttributeValue] | None,
        Field(max_length=MAX_ATTRIBUTES),
        Says("must be a string of at most 256 characters or a number within +-2**63",
             by_error={"too_long": f"must have at most {MAX_ATTRIBUTES} entries"})] = None


PRODUCT_FIELDS = frozenset(Product.model_fields)
