"""The OpenAPI 3.1 document of the REST API, served at /openapi.json, generated from the contract.

Every request body, query parameter and answer is a pydantic model (shared/models.py for events
and products, server/api/contract.py for the rest); their JSON schemas are the document's named
`components/schemas`, referenced by `$ref`, so a generated Kotlin or Swift client gets named types.
This module adds only what is not a type: the paths, their operations, security and statuses.
Bounds an operator configures (batch sizes, k, users per sync) are the running server's.
tests/server/api/test_openapi.py runs schemathesis (every check, the stateful phase too) against a
real server with this document.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from pocketrank.shared.models import ID_PATTERN, PRODUCT_ID_PATTERN

from ..config import Config
from . import contract as c
from .contract import ANSWERS, REQUESTS, EventBatch, ProductBatch, query_models

REF = "#/components/schemas/{model}"
# The operator key; "{}" because a development server (no POCKETRANK_OPERATOR_KEY) asks for none.
OPERATOR: list[dict[str, list[str]]] = [{"operator": []}, {"operatorBearer": []}, {}]
# A device token, optional unless POCKETRANK_REQUIRE_DEVICE_TOKEN is set.
DEVICE: list[dict[str, list[str]]] = [{"device": []}, {}]
ID = {"type": "string", "pattern": ID_PATTERN, "minLength": 1, "maxLength": 64}
PRODUCT_ID = {"type": "string", "pattern": PRODUCT_ID_PATTERN, "minLength": 1, "maxLength": 64}


@cache
def _components() -> dict[str, Any]:
    _, schemas = models_json_schema([(m, "validation") for m in (*REQUESTS, *ANSWERS)], ref_template=REF)
    return schemas["$defs"]


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _json(model: type[BaseModel], description: str = "ok", **extra: Any) -> dict:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}, **extra}


def _errors(*codes: int) -> dict:
    return {str(code): _json(c.Error, "error") for code in codes}


def _query(model: type[BaseModel]) -> list[dict]:
    """A query model's fields as OpenAPI query parameters (their schemas inline)."""
    schema = model.model_json_schema(ref_template=REF)
    required = set(schema.get("required", ()))
    out = []
    for name, prop in schema["properties"].items():
        prop = {k: v for k, v in prop.items() if k != "title"}
        description = prop.pop("description", None)
        if "anyOf" in prop:  # "X or null": a query parameter is a string or absent, never null
            prop = next(s for s in prop["anyOf"] if s.get("type") != "null") | (
                {"default": prop["default"]} if prop.get("default") is not None else {})
        param = {"name": name, "in": "query", "required": name in required, "schema": prop}
        if description:
            param["description"] = description
        out.append(param)
    return out


def _body(model: type[BaseModel]) -> dict:
    return {"required": True, "content": {"application/json": {"schema": _ref(model)}}}


def _path(name: str, schema: dict) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": schema}


TOO_MANY = {"description": "rate limited (per device token, or per address without one); retry after "
                           "`Retry-After` seconds",
            "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}},
            "content": {"application/json": {"schema": {"$ref": REF.format(model="Error")}}}}


def _artifact_get(operation_id: str, extra_path: list[dict], errors: tuple[int, ...]) -> dict:
    """GET of a bundle artifact (live or a canary variant's): the same bytes, Range and caching answers."""
    return {
        "operationId": operation_id, "security": DEVICE,
        "parameters": [_path("version", {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}), *extra_path,
                       _path("name", ID),
                       {"name": "Range", "in": "header", "description": "a byte range (RFC 9110), so an interrupted "
                        "download resumes; a range past the end is a 416", "schema": {"type": "string"}}],
        "responses": {"200": {"description": "the artifact's bytes",
                              "content": {"application/octet-stream": {"schema": {"type": "string",
                                                                                  "contentMediaType":
                                                                                  "application/octet-stream"}}}},
                      "206": {"description": "a byte range of the artifact"},
                      "304": {"description": "not modified"},
                      "416": {"description": "range not satisfiable"},
                      **_errors(*errors)},
    }


def document(config: Config | None = None) -> dict:
    """The document for a server with `config`'s bounds (default: the defaults)."""
    config = config or Config(home=Path())
    return copy.deepcopy(_document(config.default_k, config.max_k, config.max_users_per_sync,
                                   config.max_events_per_batch, config.max_items_per_batch))


@cache
def _document(default_k: int, max_k: int, max_users: int, max_events: int, max_items: int) -> dict:
    config = Config(home=Path(), default_k=default_k, max_k=max_k, max_users_per_sync=max_users)
    queries = query_models(config)
    schemas = copy.deepcopy(_components())
    schemas[EventBatch.__name__]["properties"]["events"]["maxItems"] = max_events
    schemas[ProductBatch.__name__]["properties"]["items"]["maxItems"] = max_items
    for model in queries.values():  # a query model's fields are parameters, not a schema of their own
        schemas.pop(model.__name__, None)
    doc = _paths(queries)
    doc["components"]["schemas"] = schemas
    for operations in doc["paths"].values():  # every endpoint is rate limited (server/api/ratelimit.py)
        for op in operations.values():
            op["responses"]["429"] = TOO_MANY
    return doc


def _paths(queries: Mapping[str, type[BaseModel]]) -> dict:
    return {
        "openapi": "3.1.0",
        "info": {"title": "pocketrank", "version": "1",
                 "description": "Recommendations and delta sync for devices; byte layouts in docs/wire-format.md. "
                                "A method a path does not list is a 405 with an Allow header."},
        "components": {"securitySchemes": {
            "device": {"type": "http", "scheme": "bearer", "description": "token from POST /v1/devices"},
            "operator": {"type": "apiKey", "in": "header", "name": "X-Operator-Key",
                         "description": "POCKETRANK_OPERATOR_KEY"},
            "operatorBearer": {"type": "http", "scheme": "bearer",
                               "description": "POCKETRANK_OPERATOR_KEY as a Bearer token (what Prometheus sends); "
                                              "on the operator's endpoints only"},
        }},
        "paths": {
            "/healthz": {"get": {"operationId": "health", "responses": {
                "200": _json(c.Health, "liveness: the process answers; touches no store")}}},
            "/readyz": {"get": {"operationId": "ready", "responses": {
                "200": _json(c.Readiness, "store, model and bundle ready"),
                "503": _json(c.Readiness, "not ready: `missing` names what (store, model, bundle)")}}},
            "/v1/events": {"post": {
                "operationId": "postEvents", "security": DEVICE, "requestBody": _body(c.EventBatch),
                "responses": {"200": _json(c.EventResults, "every event accepted or duplicate"),
                              "422": _json(c.EventRejections, "some events rejected or in conflict with a logged "
                                           "event of the same id (named in `message` and `results`); the others "
                                           "are logged as in a 200"),
                              **_errors(400, 401, 403, 413, 503)}}},
            "/v1/recommendations": {"get": {
                "operationId": "getRecommendations", "security": DEVICE,
                "parameters": _query(queries["recommendations"]),
                "responses": {"200": _json(c.Recommendations), **_errors(400, 401, 403, 503)}}},
            "/v1/sync": {"get": {
                "operationId": "sync", "security": DEVICE,
                "description": "`without` may only name users that are also in `users` (else a 400).",
                "parameters": [*_query(queries["sync"]),
                               {"name": "If-None-Match", "in": "header", "required": False,
                                "schema": {"type": "string"}}],
                "responses": {"200": _json(c.SyncAnswer),
                              "304": {"description": "nothing changed since the cursor (or If-None-Match matched "
                                                     "the ETag); no body"},
                              **_errors(400, 401, 403, 503)}}},
            "/v1/artifacts/{version}/{name}": {"get": _artifact_get("getArtifact", [], (401, 404))},
            "/v1/artifacts/{version}/canary/{model}/{name}": {"get": {
                **_artifact_get("getVariantArtifact",
                                [_path("model", queries["sync"].model_json_schema()["properties"]["model"]["anyOf"][0])],
                                (400, 401, 404)),
                "description": "an artifact of bundle version's canary variant for model (docs/sync-protocol.md)"}},
            "/v1/items": {"post": {
                "operationId": "upsertItems", "security": OPERATOR, "requestBody": _body(c.ProductBatch),
                "responses": {"200": _json(c.ItemResults, "each product created, updated or rejected (named in "
                                           "`results`)", links={"GetItem": {
                                               "operationId": "getItem", "description": "the first product sent",
                                               "parameters": {"item_id": "$response.body#/results/0/item_id"}}}),
                              **_errors(400, 401, 413, 503)}}},
            "/v1/items/{item_id}": {"get": {
                "operationId": "getItem",
                "parameters": [_path("item_id", PRODUCT_ID)],
                "responses": {"200": _json(c.ItemInfo), **_errors(400, 404, 503)}}},
            "/v1/users/{user_id}": {"get": {
                "operationId": "getUser", "security": DEVICE,
                "parameters": [_path("user_id", ID), *_query(queries["user"])],
                "responses": {"200": _json(c.UserRecord), **_errors(400, 401, 403, 404, 503)}}},
            "/metrics": {"get": {
                "operationId": "prometheusMetrics", "security": OPERATOR,
                "description": "`window` / `bucket` may give at most 10,000 points (else a 400 naming bucket). "
                               "Never waits for the event log: until a new worker has read it once, the "
                               "window's figures are left out (pocketrank_business_figures_complete 0).",
                "parameters": _query(queries["metrics"]),
                "responses": {"200": {"description": "Prometheus text exposition",
                                      "content": {"text/plain": {"schema": {"type": "string"}}}},
                              **_errors(400, 401)}}},
            "/v1/metrics/summary": {"get": {
                "operationId": "metricsSummary", "security": OPERATOR,
                "description": "`window` / `bucket` may give at most 10,000 points (else a 400 naming bucket). "
                               "A worker started moments ago may still be reading the event log: then a 503 "
                               "with Retry-After.",
                "parameters": _query(queries["metrics"]),
                "responses": {"200": _json(c.MetricsSummary), **_errors(400, 401, 503)}}},
            "/v1/metrics/shadow": {"get": {
                "operationId": "metricsShadow", "security": OPERATOR,
                "description": "The shadow model's agreement with the served one (this process's sample) and "
                               "hit rates of later clicks; `shadow` is null when none is set "
                               "(pocketrank shadow start).",
                "parameters": _query(queries["shadow"]),
                "responses": {"200": _json(c.ShadowReport), **_errors(400, 401, 503)}}},
            "/v1/devices": {"post": {
                "operationId": "registerDevice", "security": OPERATOR,
                "description": "a new device id only: an id registered before (even revoked) is a 409",
                "requestBody": _body(c.DeviceRegistration),
                "responses": {"201": _json(c.RegisteredDevice), **_errors(400, 401, 409, 413)}}},
            "/v1/devices/{device_id}": {"delete": {
                "operationId": "revokeDevice", "security": OPERATOR,
                "parameters": [_path("device_id", ID)],
                "responses": {"204": {"description": "revoked"}, **_errors(401, 404)}}},
        },
    }
