"""Schemathesis against the OpenAPI document and a real server on loopback: no 5xx, responses match."""

import os
import re
import shutil

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


@pytest.fixture(scope="module")
def live(trained_home, tmp_path_factory):
    home = tmp_path_factory.mktemp("fuzz") / "home"
    shutil.copytree(trained_home, home)
    with LocalServer(home) as server:
        yield server


@schema.parametrize()
@settings(max_examples=int(os.environ.get("POCKETRANK_FUZZ_EXAMPLES", "25")), deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_api_conforms(case, live):
    # call_and_validate raises on any failed check; the status is asserted too, so a broken check
    # could not make this pass.
    response = case.call_and_validate(base_url=live.url, timeout=10,
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
