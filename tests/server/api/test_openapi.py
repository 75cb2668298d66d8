"""Schemathesis against the OpenAPI document and a real server on loopback: no 5xx, responses match."""

import os
import re
import shutil

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance, status_code_conformance

from demo_app.localserver import LocalServer
from server.api.app import create_app
from server.api.openapi_spec import document
from server.config import Config

pytestmark = pytest.mark.slow  # see `make test-fast`

schema = schemathesis.openapi.from_dict(document())


OPERATOR_KEY = "fuzz-operator-key-0123456789"
FUZZ_DEVICE, FUZZ_USER = "fuzz-phone", "196"


@pytest.fixture(scope="module", params=["open", "tokens"])
def live(request, trained_home, tmp_path_factory):
    """A real server, twice: as in development (no credentials), and with device tokens required and an
    operator key, every call carrying a real device token and the key (so the fuzzer gets past the door
    and reaches what lies behind it)."""
    home = tmp_path_factory.mktemp(f"fuzz-{request.param}") / "home"
    shutil.copytree(trained_home, home)
    with pytest.MonkeyPatch.context() as env:
        headers = {}
        if request.param == "tokens":
            env.setenv("POCKETRANK_OPERATOR_KEY", OPERATOR_KEY)
            env.setenv("POCKETRANK_REQUIRE_DEVICE_TOKEN", "1")
        with LocalServer(home) as server:
            if request.param == "tokens":
                resp = httpx.post(server.url + "/v1/devices", json={"device_id": FUZZ_DEVICE, "users": [FUZZ_USER]},
                                  headers={"X-Operator-Key": OPERATOR_KEY}, timeout=10)
                assert resp.status_code == 201, resp.text
                headers = {"Authorization": f"Bearer {resp.json()['token']}", "X-Operator-Key": OPERATOR_KEY}
            yield server, headers


def as_the_tokens_device(case) -> None:
    """Name the token's own device and user where the case names one: random ids would only ever meet
    a 403, and the run is to reach what lies behind the token check (the open run fuzzes the ids)."""
    if isinstance(case.query, dict) and "user_id" in case.query:
        case.query["user_id"] = FUZZ_USER
    if isinstance(case.query, dict) and "users" in case.query:
        case.query["users"] = FUZZ_USER
        case.query.pop("without", None)
    if isinstance(case.path_parameters, dict) and "user_id" in case.path_parameters:
        case.path_parameters["user_id"] = FUZZ_USER
    body = case.body if isinstance(case.body, dict) else {}
    for ev in body.get("events", []) if isinstance(body.get("events"), list) else []:
        if isinstance(ev, dict):
            ev.update(user_id=FUZZ_USER, device_id=FUZZ_DEVICE)


@schema.parametrize()
@settings(max_examples=int(os.environ.get("POCKETRANK_FUZZ_EXAMPLES", "25")), deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_api_conforms(case, live):
    server, headers = live
    if headers:
        as_the_tokens_device(case)
    # call_and_validate raises on any failed check; the status is asserted too, so a broken check
    # could not make this pass.
    response = case.call_and_validate(base_url=server.url, headers=headers, timeout=10,
                                      checks=[not_a_server_error, status_code_conformance,
                                              response_schema_conformance])
    assert response.status_code < 500


def test_the_document_lists_every_route(home):
    app = create_app(Config(home=home))
    served = app.test_client().get("/openapi.json").get_json()
    assert served == document()
    # Flask's <converter:name> (int, path, ...) is OpenAPI's {name}.
    routes = {re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", str(r.rule))
              for r in app.url_map.iter_rules() if r.endpoint != "static"}
    missing = routes - {"/openapi.json"} - set(served["paths"])
    assert not missing, f"routes without an OpenAPI entry: {missing}"
