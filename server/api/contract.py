"""The REST API's requests and answers as pydantic models: what the blueprints check and what the
OpenAPI document (server/api/openapi_spec.py) is generated from.

Events and products are shared/models.py's (the device checks them too); here are the bodies
around them, the query parameters, and the answers. Bounds an operator can set
(POCKETRANK_MAX_K, POCKETRANK_MAX_USERS_PER_SYNC, ...) come from the Config: `Queries(config)`
builds the query models with them, and the document says the same numbers.
"""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from pocketrank.shared.models import (
    ID_PATTERN,
    ID_TEXT,
    Id,
    Product,
    Says,
    WireEvent,
)

from ..bundle.variants import MODEL_RE
from ..monitoring.running import MAX_CLICKS
from ..online.segments import SEGMENT_FIELDS
from .device_registry import MAX_USERS_PER_DEVICE

_ID = ID_PATTERN.strip("^$")
MAX_LACKING_ITEMS = 2000  # item ids a device may name as lacking in one sync (it asks again for more)
# A signed 32-bit integer in decimal (the packed records' item ids), as a pattern.
INT32 = (r"-?(?:[0-9]{1,9}|1[0-9]{9}|20[0-9]{8}|21[0-3][0-9]{7}|214[0-6][0-9]{6}|2147[0-3][0-9]{5}"
         r"|21474[0-7][0-9]{4}|214748[0-2][0-9]{3}|2147483[0-5][0-9]{2}|21474836[0-3][0-9]|214748364[0-7])"
         r"|-2147483648")
MODEL_PATTERN = rf"^{MODEL_RE.pattern}$"  # a model version (server/bundle/variants.py)
SEGMENT_VALUE = r"^[A-Za-z0-9_.:+\-]{0,64}$"  # server/online/segments.py's VALUE_RE; empty: not given
MAX_METRICS_SPAN = 90 * 86_400


class Body(BaseModel):
    """A JSON request body: every key is declared, and an undeclared one is refused by name."""

    model_config = ConfigDict(extra="forbid", strict=True)
    unknown: ClassVar[str] = "is not a known field of this request"


# --- request bodies ---

class EventBatch(Body):
    """POST /v1/events: each event is checked on its own (a bad one is `rejected` in the 422's results)."""

    events: list[WireEvent] = Field(max_length=500)


class ProductBatch(Body):
    """POST /v1/items: each product is checked on its own (a bad one is `rejected` in the results)."""

    items: list[Product] = Field(max_length=500)


class DeviceRegistration(Body):
    """POST /v1/devices: a new device id and the users it may speak for."""

    device_id: Id
    users: Annotated[list[Id], Field(min_length=1, max_length=MAX_USERS_PER_DEVICE),
                     Says(f"must be a list of 1-{MAX_USERS_PER_DEVICE} user ids ({ID_TEXT[8:]})")]


BATCH_LIMITS = {"events": "max_events_per_batch", "items": "max_items_per_batch"}


# --- query parameters ---

class Query(BaseModel):
    """Query parameters: strings from the URL, so numbers are parsed from text; others are ignored."""

    model_config = ConfigDict(extra="ignore")


def _ids(most: int | None) -> str:
    return rf"^{_ID}(?:,{_ID}){{0,{most - 1}}}$" if most else rf"^{_ID}(?:,{_ID})*$"


def _fields(**fields: Any) -> dict[str, Any]:
    """create_model's field definitions, (type, default) each (typed loosely: Annotated forms are values here)."""
    return fields


@cache
def queries(default_k: int, max_k: int, max_users: int) -> dict[str, type[Query]]:
    """The query models of the endpoints that take query parameters, with the configured bounds."""
    k = Annotated[int, Field(ge=1, le=max_k, description=f"how many items (default {default_k})"),
                  Says(f"must be between 1 and {max_k}", "must be an integer")]
    segment = Annotated[str | None, Field(pattern=SEGMENT_VALUE, description="a segment attribute for a new user"),
                        Says("must be 1-64 characters of A-Z a-z 0-9 _ . : + -")]
    user_list = f"must list 1-{max_users} user ids ({ID_TEXT[8:]}), comma-separated"
    return {
        "recommendations": create_model(
            "RecommendationsQuery", __base__=Query, **_fields(user_id=(Id, ...), k=(k, default_k),
                                                            **{name: (segment, None) for name in SEGMENT_FIELDS})),
        "sync": create_model(
            "SyncQuery", __base__=Query, **_fields(
            cursor=(Annotated[int, Field(ge=0, le=2**31 - 1, description="the bundle version the device holds"),
                              Says(f"must be between 0 and {2**31 - 1}", "must be an integer")], 0),
            users=(Annotated[str, Field(pattern=_ids(max_users), description="the device's users, comma-separated"),
                             Says(user_list)], ...),
            without=(Annotated[str | None, Field(pattern=_ids(None), description="users (also in users) the device "
                                                 "holds no record for: answered whole"), Says(ID_TEXT)], None),
            # At most MAX_LACKING_ITEMS of them: counted by the endpoint (a pattern that counts to 2,000
            # alternations of INT32 is past the regex engines' size limits).
            items=(Annotated[str | None, Field(pattern=rf"^(?:{INT32})(?:,(?:{INT32}))*$",
                                               description=f"item ids the device lacks (at most "
                                                           f"{MAX_LACKING_ITEMS:,}): their entries are sent "
                                                           "whatever the cursor"),
                             Says("must be comma-separated item ids, each a signed 32-bit integer")], None),
            model=(Annotated[str | None, Field(pattern=MODEL_PATTERN, description="the model_version of the manifest "
                                               "the device holds; sent when it holds a canary variant (absent: the "
                                               "live model of the cursor's bundle)"),
                             Says("must be a model version: 1-255 characters of A-Z a-z 0-9 _ . : + @ -, "
                                  "not starting with . + : @ or -")], None))),
        "user": create_model(
            "UserQuery", __base__=Query, **_fields(
            recent=(Annotated[int, Field(ge=0, le=1000, description="how many recent events (default 10)"),
                              Says("must be between 0 and 1000", "must be an integer")], 10))),
        "metrics": create_model(
            "MetricsQuery", __base__=Query, **_fields(
            window=(Annotated[float, Field(ge=1, le=MAX_METRICS_SPAN, description="seconds summed (default a day)")],
                    None),
            bucket=(Annotated[float, Field(ge=1, le=MAX_METRICS_SPAN,
                                           description="seconds per time-series point (default an hour); at most "
                                                       "10,000 points per window")], None))),
        "shadow": create_model(
            "ShadowQuery", __base__=Query, **_fields(
            limit=(Annotated[int, Field(ge=1, le=MAX_CLICKS, description="the newest clicks counted")], None))),
    }


def query_models(config) -> dict[str, type[Query]]:
    """The query models with a pocketrank.server.config.Config's bounds."""
    return queries(config.default_k, config.max_k, config.max_users_per_sync)


# --- answers ---

class Answer(BaseModel):
    model_config = ConfigDict(extra="allow")


class Error(Answer):
    """Every 4xx and 5xx: a code, what went wrong and what to do, and the field at fault if one is."""

    error: str
    message: str
    field: str | None = None


class Health(Answer):
    """Liveness: the process answers; no store is read."""

    status: str


class Check(Answer):
    ok: bool
    detail: str


class Readiness(Answer):
    """200 when the store answers, a model is loaded and a bundle is published; else 503 naming what is missing."""

    status: Literal["ready", "not_ready"]
    ready: bool
    missing: list[str]
    checks: dict[str, Check]
    model_version: str | None = None
    loaded_model: str | None = None
    bundle_version: int | None = None


class EventResult(Answer):
    event_id: str | None
    status: Literal["accepted", "duplicate", "conflict", "rejected"]
    field: str | None = None
    reason: str | None = None


class EventResults(Answer):
    """Every event accepted or duplicate (200); with a 422, also `error`, `field` and `message` naming the
    rejected and conflicting ones (the others are logged as in a 200)."""

    results: list[EventResult]
    accepted: int
    duplicate: int
    conflict: int
    rejected: int
    server_time: float | None = Field(None, description="the server's clock (unix seconds) when it checked the "
                                                        "batch: how a device learns its clock's offset")


class EventRejections(EventResults):
    error: str
    field: str
    message: str


class RankedItem(Answer):
    item_id: str
    score: float
    rank: int
    # display metadata, for devices that hold no entry for the item (wire 4)
    title: str | None = None
    category: str | None = None
    price: float | None = None
    in_stock: bool | None = None
    slot: str | None = None


class Recommendations(Answer):
    user_id: str
    items: list[RankedItem]
    source: str
    path: str
    model_version: str | None = None
    bundle_version: int | None = None
    segment: str | None = None


Sha256 = Annotated[str, Field(pattern="^[0-9a-f]{64}$")]
Base64 = Annotated[str, Field(json_schema_extra={"contentEncoding": "base64"})]


class ItemEntry(Answer):
    """One item's signed PRI2 entry (docs/sync-protocol.md, "Item entries")."""

    model_config = ConfigDict(extra="forbid")
    data: Base64
    sig: Base64


class RecordEntry(Answer):
    """One user's part of a sync answer (docs/sync-protocol.md, "Record entries")."""

    kind: Literal["full", "delta", "same"]
    sha256: Sha256
    sig: Base64
    data: Base64 | None = None
    base_version: int | None = None
    base_sha256: Sha256 | None = None


class SyncAnswer(Answer):
    version: int
    cursor: int
    snapshot: bool
    snapshot_reason: str | None = None
    history_from: int
    manifest: Base64
    signature: Base64
    records: dict[str, RecordEntry]
    unknown_users: list[str]
    states: dict[str, Any]
    artifacts: dict[str, Any]
    items: dict[str, ItemEntry]
    # wire 6: sealed per answer (docs/sync-protocol.md §5.4)
    list_digests: dict[str, Sha256]
    popular_digest: Sha256
    seal: Base64


class ItemResult(Answer):
    item_id: str | None
    status: Literal["created", "updated", "rejected"]
    provisional: bool | None = None
    field: str | None = None
    reason: str | None = None


class ItemResults(Answer):
    results: list[ItemResult]
    created: int
    updated: int
    rejected: int


class ItemInfo(Answer):
    """A product as the catalogue holds it."""

    item_id: str
    title: str
    category: str
    year: int | None = None
    price: float | None = None
    in_stock: bool | None = None
    categories: list[str] | None = None
    currency: str | None = None
    attributes: dict[str, str] | None = None
    created_at: float | None = None
    provisional: bool | None = None
    has_vector: bool | None = None


class UserRecord(Answer):
    user_id: str
    n_events: int
    embedding: list[float]
    embedding_from: Literal["encoder", "state", "none"] | None = None
    model_version: str | None = None
    updated_at: float | None = None
    log_position: int | None = None
    recent: list[dict[str, Any]] | None = None
    features: dict[str, Any] | None = None


class MetricsSummary(Answer):
    overall: dict[str, Any]
    by_segment: dict[str, Any]
    timeseries: list[dict[str, Any]]
    events_per_second: float | None = None
    models: dict[str, Any] | None = None
    canary: dict[str, Any] | None = None
    shadow: dict[str, Any] | None = None


class HitRate(Answer):
    clicks: int
    served: float | None
    shadow: float | None


class ShadowFigures(Answer):
    version: str
    sample: float
    compared: int
    dropped: int
    overlap: float | None
    kendall_tau: float | None
    hit_rate: HitRate
    started_at: float | None = None
    served_model: str | None = None
    failed: int | None = None


class ShadowReport(Answer):
    """The shadow model's agreement with the served one; null when none is set (pocketrank shadow start)."""

    shadow: ShadowFigures | None


class RegisteredDevice(Answer):
    device_id: str
    token: str = Field(description="shown once: the device sends it as 'Authorization: Bearer <token>'")
    users: list[str]


REQUESTS: tuple[type[BaseModel], ...] = (EventBatch, ProductBatch, DeviceRegistration)
ANSWERS: tuple[type[BaseModel], ...] = (Error, Health, Readiness, EventResults, EventRejections, Recommendations, SyncAnswer,
                                        ItemResults, ItemInfo, UserRecord, MetricsSummary, ShadowReport,
                                        RegisteredDevice)
