"""The OpenAPI 3.0 document of the REST API, served at /openapi.json.

Written by hand beside the blueprints (not generated) so it is the contract a
Kotlin or Swift client is built from; tests/server/api/test_openapi.py runs
schemathesis against it in-process to keep the two honest.
"""

from __future__ import annotations

from typing import Any

from ..monitoring.running import MAX_CLICKS

ID = {"type": "string", "pattern": r"^[A-Za-z0-9_.:\-]{1,64}$", "maxLength": 64, "minLength": 1}
ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {"error": {"type": "string"}, "message": {"type": "string"}, "field": {"type": "string"}},
}
# The marketplace's own product id (an integer is accepted as its digits).
PRODUCT_ID = {"oneOf": [{"type": "string", "minLength": 1, "maxLength": 64, "pattern": r"^\S(.*\S)?$"},
                        {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}]}
EVENT = {
    "type": "object",
    "required": ["event_id", "user_id", "device_id", "type", "timestamp"],
    "additionalProperties": False,
    "properties": {
        "event_id": ID, "user_id": ID, "device_id": ID, "session_id": ID,
        "type": {"type": "string", "enum": ["view", "click", "search", "add_to_cart", "purchase", "impression"]},
        "item_id": PRODUCT_ID,
        "query": {"type": "string", "minLength": 1, "maxLength": 256},
        "timestamp": {"type": "number", "minimum": 0, "maximum": 4102444800},
        "context": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 64}},
    },
}
EVENT_RESULT = {
    "type": "object", "required": ["event_id", "status"],
    "properties": {"event_id": {"type": "string", "nullable": True},
                   "status": {"type": "string", "enum": ["accepted", "duplicate", "conflict", "rejected"]},
                   "field": {"type": "string"}, "reason": {"type": "string"}},
}
EVENT_RESULTS: dict[str, Any] = {
    "type": "object", "required": ["results", "accepted", "duplicate", "conflict", "rejected"],
    "properties": {"results": {"type": "array", "items": EVENT_RESULT}, "accepted": {"type": "integer"},
                   "duplicate": {"type": "integer"}, "conflict": {"type": "integer"},
                   "rejected": {"type": "integer"},
                   "server_time": {"type": "number", "description": "the server's clock (unix seconds) when it "
                                   "checked the batch: how a device learns its clock's offset"}},
}
ITEM = {
    "type": "object",
    "required": ["item_id", "score", "rank"],
    "properties": {"item_id": {"type": "string"}, "score": {"type": "number"}, "rank": {"type": "integer"},
                   # display metadata, for devices that hold no entry for the item (wire 4)
                   "title": {"type": "string"}, "category": {"type": "string"}, "price": {"type": "number"},
                   "in_stock": {"type": "boolean"}},
}


# One item's signed PRI2 entry in a sync answer (docs/sync-protocol.md, "Item entries").
ITEM_ENTRY = {"type": "object", "required": ["data", "sig"], "additionalProperties": False,
              "properties": {"data": {"type": "string", "format": "byte"}, "sig": {"type": "string", "format": "byte"}}}

# One user's part of a sync answer (docs/sync-protocol.md, "Record entries").
RECORD_ENTRY = {
    "type": "object", "required": ["kind", "sha256", "sig"],
    "properties": {"kind": {"type": "string", "enum": ["full", "delta", "same"]},
                   "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                   "sig": {"type": "string", "format": "byte"},
                   "data": {"type": "string", "format": "byte"},
                   "base_version": {"type": "integer"},
                   "base_sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"}},
}
METRICS_PARAMS = [
    {"name": "window", "in": "query", "schema": {"type": "number", "minimum": 1, "maximum": 90 * 86400}},
    {"name": "bucket", "in": "query", "schema": {"type": "number", "minimum": 1, "maximum": 90 * 86400}},
]
# The operator key; "{}" because a development server (no POCKETRANK_OPERATOR_KEY) asks for none.
OPERATOR: list[dict[str, list[str]]] = [{"operator": []}, {"operatorBearer": []}, {}]


def _errors(*codes: int) -> dict:
    return {str(c): {"description": "error", "content": {"application/json": {"schema": ERROR}}} for c in codes}


def _json(schema: dict, description: str = "ok") -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _artifact_get(operation_id: str, extra_path: list[dict], errors: tuple[int, ...]) -> dict:
    """GET of a bundle artifact (live or a canary variant's): the same bytes, Range and caching answers."""
    return {
        "operationId": operation_id,
        "parameters": [{"name": "version", "in": "path", "required": True,
                        "schema": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}},
                       *extra_path,
                       {"name": "name", "in": "path", "required": True, "schema": ID},
                       {"name": "Range", "in": "header", "schema": {"type": "string"}}],
        "responses": {"200": {"description": "the artifact's bytes",
                              "content": {"application/octet-stream": {"schema": {"type": "string",
                                                                                  "format": "binary"}}}},
                      "206": {"description": "a byte range of the artifact"},
                      "304": {"description": "not modified"},
                      "416": {"description": "range not satisfiable"},
                      **_errors(*errors)},
    }


TOO_MANY = {"description": "rate limited (per device token, or per address without one); retry after "
                           "`Retry-After` seconds",
            "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}},
            "content": {"application/json": {"schema": ERROR}}}


def document() -> dict:
    doc = _paths()
    for operations in doc["paths"].values():  # every endpoint is rate limited (server/api/ratelimit.py)
        for op in operations.values():
            op["responses"]["429"] = TOO_MANY
    return doc


def _paths() -> dict:
    bearer: list[dict[str, list[str]]] = [{"device": []}, {}]  # a device token, optional unless POCKETRANK_REQUIRE_DEVICE_TOKEN is set
    return {
        "openapi": "3.0.3",
        "info": {"title": "pocketrank", "version": "1",
                 "description": "Recommendations and delta sync for devices; byte layouts in docs/wire-format.md."},
        "components": {"securitySchemes": {
            "device": {"type": "http", "scheme": "bearer", "description": "token from POST /v1/devices"},
            "operator": {"type": "apiKey", "in": "header", "name": "X-Operator-Key",
                         "description": "POCKETRANK_OPERATOR_KEY"},
            "operatorBearer": {"type": "http", "scheme": "bearer",
                               "description": "POCKETRANK_OPERATOR_KEY as a Bearer token (what Prometheus sends); "
                                              "on the operator's endpoints only"},
        }},
        "paths": {
            "/healthz": {"get": {"operationId": "health", "responses": {"200": _json({
                "type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}},
                "liveness: the process answers; touches no store")}}},
            "/readyz": {"get": {"operationId": "ready", "responses": {
                code: _json({"type": "object", "required": ["status", "ready", "missing", "checks"],
                             "properties": {"status": {"type": "string", "enum": ["ready", "not_ready"]},
                                            "ready": {"type": "boolean"},
                                            "missing": {"type": "array", "items": {"type": "string"}},
                                            "checks": {"type": "object"},
                                            "model_version": {"type": "string", "nullable": True},
                                            "loaded_model": {"type": "string", "nullable": True},
                                            "bundle_version": {"type": "integer", "nullable": True}}}, what)
                for code, what in (("200", "store, model and bundle ready"),
                                   ("503", "not ready: `missing` names what (store, model, bundle)"))}}},
            "/v1/events": {"post": {
                "operationId": "postEvents", "security": bearer,
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["events"],
                    "properties": {"events": {"type": "array", "maxItems": 500, "items": EVENT}}}}}},
                "responses": {"200": _json(EVENT_RESULTS, "every event accepted or duplicate"),
                              "422": _json({**EVENT_RESULTS, "required": [*EVENT_RESULTS["required"], "error", "message"],
                                            "properties": {**EVENT_RESULTS["properties"], **ERROR["properties"]}},
                                           "some events rejected or in conflict with a logged event of the "
                                           "same id (named in `message` and `results`); the others are "
                                           "logged as in a 200"),
                              **_errors(400, 401, 403, 413, 503)}}},
            "/v1/recommendations": {"get": {
                "operationId": "getRecommendations", "security": bearer,
                "parameters": [{"name": "user_id", "in": "query", "required": True, "schema": ID},
                               {"name": "k", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}}],
                "responses": {"200": _json({"type": "object", "required": ["user_id", "items", "source", "path"],
                                            "properties": {"user_id": {"type": "string"},
                                                           "items": {"type": "array", "items": ITEM},
                                                           "source": {"type": "string"}, "path": {"type": "string"},
                                                           "model_version": {"type": "string"},
                                                           "bundle_version": {"type": "integer"}}}),
                              **_errors(400, 401, 403, 503)}}},
            "/v1/sync": {"get": {
                "operationId": "sync", "security": bearer,
                "parameters": [
                    {"name": "cursor", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}},
                    {"name": "users", "in": "query", "required": True,
                     "schema": {"type": "string", "pattern": r"^[A-Za-z0-9_.:\-]{1,64}(,[A-Za-z0-9_.:\-]{1,64}){0,49}$"}},
                    {"name": "without", "in": "query", "required": False,
                     "description": "users (also in users) the device holds no record for: answered whole",
                     "schema": {"type": "string", "pattern": r"^[A-Za-z0-9_.:\-]{1,64}(,[A-Za-z0-9_.:\-]{1,64}){0,49}$"}},
                    {"name": "items", "in": "query", "required": False,
                     "description": "item ids the device lacks (at most 2,000): their entries are sent whatever the cursor",
                     "schema": {"type": "string", "pattern": r"^-?[0-9]{1,10}(,-?[0-9]{1,10}){0,1999}$"}},
                    {"name": "model", "in": "query", "required": False,
                     "description": "the model_version of the manifest the device holds; sent when it holds a "
                                    "canary variant (absent: the live model of the cursor's bundle)",
                     "schema": {"type": "string", "pattern": r"^[A-Za-z0-9_][A-Za-z0-9_.:+@\-]{0,254}$"}},
                    {"name": "If-None-Match", "in": "header", "required": False, "schema": {"type": "string"}},
                ],
                "responses": {"200": _json({"type": "object",
                                            "required": ["version", "cursor", "snapshot", "history_from", "manifest",
                                                         "signature", "records", "unknown_users", "states",
                                                         "artifacts", "items", "list_digests", "popular_digest",
                                                         "seal"],
                                            "properties": {"version": {"type": "integer"},
                                                           "cursor": {"type": "integer"},
                                                           "snapshot": {"type": "boolean"},
                                                           "snapshot_reason": {"type": "string", "nullable": True},
                                                           "history_from": {"type": "integer"},
                                                           "manifest": {"type": "string", "format": "byte"},
                                                           "signature": {"type": "string", "format": "byte"},
                                                           "records": {"type": "object",
                                                                       "additionalProperties": RECORD_ENTRY},
                                                           "items": {"type": "object",
                                                                     "additionalProperties": ITEM_ENTRY},
                                                           "states": {"type": "object"},
                                                           "unknown_users": {"type": "array",
                                                                             "items": {"type": "string"}},
                                                           "artifacts": {"type": "object"},
                                                           # wire 6: sealed per answer (docs/sync-protocol.md §5.4)
                                                           "list_digests": {"type": "object", "additionalProperties": {
                                                               "type": "string", "pattern": "^[0-9a-f]{64}$"}},
                                                           "popular_digest": {"type": "string",
                                                                              "pattern": "^[0-9a-f]{64}$"},
                                                           "seal": {"type": "string", "format": "byte"}}}),
                              "304": {"description": "nothing changed since the cursor (or If-None-Match matched "
                                                     "the ETag); no body"},
                              **_errors(400, 401, 403, 429, 503)}}},
            "/v1/artifacts/{version}/{name}": {"get": {**_artifact_get("getArtifact", [], (401, 404)),
                                                       "security": bearer}},
            "/v1/artifacts/{version}/canary/{model}/{name}": {"get": {
                **_artifact_get("getVariantArtifact",
                                [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}],
                                (400, 401, 404)),
                "security": bearer,
                "description": "an artifact of bundle version's canary variant for model (docs/sync-protocol.md)"}},
            "/v1/items": {"post": {
                "operationId": "upsertItems", "security": OPERATOR,
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["items"],
                    "properties": {"items": {"type": "array", "items": {"type": "object"}}}}}}},
                "responses": {"200": _json({"type": "object", "required": ["results", "created", "updated", "rejected"],
                                            "properties": {"results": {"type": "array", "items": {"type": "object"}},
                                                           "created": {"type": "integer"},
                                                           "updated": {"type": "integer"},
                                                           "rejected": {"type": "integer"}}}),
                              **_errors(400, 401, 413, 503)}}},
            "/v1/items/{item_id}": {"get": {
                "operationId": "getItem",
                "parameters": [{"name": "item_id", "in": "path", "required": True,
                                "schema": {"type": "string", "minLength": 1, "maxLength": 64}}],
                "responses": {"200": _json({"type": "object", "required": ["item_id", "title", "category"],
                                            "properties": {"item_id": {"type": "string"},
                                                           "title": {"type": "string"},
                                                           "category": {"type": "string"},
                                                           "provisional": {"type": "boolean"},
                                                           "has_vector": {"type": "boolean"}}}),
                              **_errors(400, 404, 503)}}},
            "/v1/users/{user_id}": {"get": {
                "operationId": "getUser", "security": bearer,
                "parameters": [{"name": "user_id", "in": "path", "required": True, "schema": ID},
                               {"name": "recent", "in": "query",
                                "schema": {"type": "integer", "minimum": 0, "maximum": 1000}}],
                "responses": {"200": _json({"type": "object", "required": ["user_id", "n_events", "embedding"],
                                            "properties": {"user_id": {"type": "string"},
                                                           "n_events": {"type": "integer"},
                                                           "updated_at": {"type": "number"},
                                                           "embedding": {"type": "array",
                                                                         "items": {"type": "number"}},
                                                           "recent": {"type": "array"},
                                                           "features": {"type": "object", "nullable": True}}}),
                              **_errors(400, 401, 403, 404, 503)}}},
            "/metrics": {"get": {
                "operationId": "prometheusMetrics", "security": OPERATOR,
                "parameters": METRICS_PARAMS,
                "responses": {"200": {"description": "Prometheus text exposition",
                                      "content": {"text/plain": {"schema": {"type": "string"}}}},
                              **_errors(400, 401)}}},
            "/v1/metrics/summary": {"get": {
                "operationId": "metricsSummary", "security": OPERATOR,
                "parameters": METRICS_PARAMS,
                "responses": {"200": _json({"type": "object", "required": ["overall", "by_segment", "timeseries"],
                                            "properties": {"overall": {"type": "object"},
                                                           "by_segment": {"type": "object"},
                                                           "timeseries": {"type": "array", "items": {"type": "object"}},
                                                           "events_per_second": {"type": "number"},
                                                           "models": {"type": "object"},
                                                           "canary": {"type": "object", "nullable": True},
                                                           "shadow": {"type": "object", "nullable": True}}}),
                              **_errors(400, 401)}}},
            "/v1/metrics/shadow": {"get": {
                "operationId": "metricsShadow", "security": OPERATOR,
                "description": "The shadow model's agreement with the served one (this process's sample) and "
                               "hit rates of later clicks; `shadow` is null when none is set "
                               "(pocketrank shadow start).",
                "parameters": [{"name": "limit", "in": "query", "description": "the newest clicks counted",
                                "schema": {"type": "integer", "minimum": 1, "maximum": MAX_CLICKS}}],
                "responses": {"200": _json({"type": "object", "required": ["shadow"], "properties": {"shadow": {
                    "type": "object", "nullable": True,
                    "required": ["version", "sample", "compared", "dropped", "overlap", "kendall_tau", "hit_rate"],
                    "properties": {"version": {"type": "string"}, "sample": {"type": "number"},
                                   "started_at": {"type": "number"}, "served_model": {"type": "string"},
                                   "compared": {"type": "integer"}, "dropped": {"type": "integer"},
                                   "failed": {"type": "integer"},
                                   "overlap": {"type": "number", "nullable": True},
                                   "kendall_tau": {"type": "number", "nullable": True},
                                   "hit_rate": {"type": "object", "required": ["clicks", "served", "shadow"],
                                                "properties": {"clicks": {"type": "integer"},
                                                               "served": {"type": "number", "nullable": True},
                                                               "shadow": {"type": "number", "nullable": True}}}}}}}),
                              **_errors(400, 401)}}},
            "/v1/devices": {"post": {
                "operationId": "registerDevice", "security": OPERATOR,
                "description": "a new device id only: an id registered before (even revoked) is a 409",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["device_id", "users"],
                    "properties": {"device_id": ID, "users": {"type": "array", "minItems": 1, "maxItems": 50,
                                                              "items": ID}}}}}},
                "responses": {"201": _json({"type": "object", "required": ["device_id", "token", "users"],
                                            "properties": {"device_id": {"type": "string"},
                                                           "token": {"type": "string"},
                                                           "users": {"type": "array", "items": {"type": "string"}}}}),
                              **_errors(400, 401, 409, 413)}}},
            "/v1/devices/{device_id}": {"delete": {
                "operationId": "revokeDevice", "security": OPERATOR,
                "parameters": [{"name": "device_id", "in": "path", "required": True, "schema": ID}],
                "responses": {"204": {"description": "revoked"}, **_errors(401, 404)}}},
        },
    }
