"""Every user-scoped endpoint checks that the caller's token covers the user (no BOLA), and the operator
surfaces need the operator key: through Flask's test client for the semantics, and through a real server
process with a real EdgeClient for the path a phone takes."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from pocketrank.demo_app.localserver import LocalServer
from pocketrank.edge_runtime import EdgeClient
from pocketrank.server.api.app import create_app
from pocketrank.server.config import Config
from tests.factories import event_dict

KEY = "operator-key-for-the-tests-0123"
OPERATOR = {"X-Operator-Key": KEY}
OPERATOR_PATHS = ("/metrics", "/v1/metrics/summary", "/v1/metrics/shadow")


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def register(api, device: str, users: list[str]) -> str:
    resp = api.post("/v1/devices", json={"device_id": device, "users": users}, headers=OPERATOR)
    assert resp.status_code == 201, resp.data
    return resp.get_json()["token"]


@pytest.fixture
def secured(home):
    return create_app(Config(home=home, operator_key=KEY, require_device_token=True)).test_client()


@pytest.fixture
def optional(home):
    """Tokens optional (the default), an operator key set."""
    return create_app(Config(home=home, operator_key=KEY)).test_client()


def test_recommendations_need_a_token_covering_the_user(secured):
    mine = register(secured, "phone-a", ["196"])
    theirs = register(secured, "phone-b", ["186"])
    revoked = register(secured, "phone-c", ["196"])
    assert secured.delete("/v1/devices/phone-c", headers=OPERATOR).status_code == 204
    url = "/v1/recommendations?user_id=196&k=5"
    ok = secured.get(url, headers=bearer(mine))
    assert ok.status_code == 200 and ok.get_json()["path"] == "personal" and len(ok.get_json()["items"]) == 5
    assert secured.get(url).status_code == 401
    other = secured.get(url, headers=bearer(theirs))
    assert other.status_code == 403 and "196" in other.get_json()["message"]
    assert secured.get(url, headers=bearer(revoked)).status_code == 401
    assert secured.get(url, headers=bearer("made-up")).status_code == 401
    assert secured.get(url, headers=OPERATOR).status_code == 401  # the operator key is not a device token


def test_a_user_record_is_its_devices_only(secured):
    mine = register(secured, "phone-a", ["196"])
    assert secured.get("/v1/users/196", headers=bearer(mine)).status_code == 200
    assert secured.get("/v1/users/186", headers=bearer(mine)).status_code == 403
    assert secured.get("/v1/users/196").status_code == 401


def test_an_event_names_its_tokens_device_and_users(secured, home):
    token = register(secured, "phone-a", ["196"])
    now = time.time()
    batch = [event_dict("own", "196", 50, device="phone-a", ts=now - 5),
             event_dict("spoofed", "196", 50, device="phone-b", ts=now - 5),
             event_dict("other-user", "186", 50, device="phone-a", ts=now - 5)]
    resp = secured.post("/v1/events", json={"events": batch}, headers=bearer(token))
    assert resp.status_code == 422
    results = resp.get_json()["results"]
    assert [(r["status"], r.get("field")) for r in results] == [
        ("accepted", None), ("rejected", "device_id"), ("rejected", "user_id")]
    assert secured.post("/v1/events", json={"events": batch[:1]}).status_code == 401


def test_artifacts_need_a_token_where_tokens_are_required(secured, home):
    version = max(int(p.name) for p in (home / "bundles").iterdir() if p.name.isdigit())
    manifest = json.loads((home / "bundles" / str(version) / "manifest.json").read_text())
    name = next(iter(manifest["artifacts"].values()))["file"]
    url = f"/v1/artifacts/{version}/{name}"
    assert secured.get(url).status_code == 401
    token = register(secured, "phone-a", ["196"])
    assert secured.get(url, headers=bearer(token)).status_code == 200


def test_optional_tokens_are_still_checked_when_sent(optional):
    url = "/v1/recommendations?user_id=196&k=5"
    assert optional.get(url).status_code == 200  # anonymous: allowed where tokens are optional
    token = register(optional, "phone-b", ["186"])
    assert optional.get(url, headers=bearer(token)).status_code == 403
    assert optional.delete("/v1/devices/phone-b", headers=OPERATOR).status_code == 204
    assert optional.get(url, headers=bearer(token)).status_code == 401


@pytest.mark.parametrize("path", OPERATOR_PATHS)
def test_operator_surfaces_need_the_operator_key(optional, secured, path):
    device = bearer(register(secured, "phone-a", ["196"]))
    for api in (optional, secured):
        assert api.get(path).status_code == 401
        assert api.get(path, headers={"X-Operator-Key": KEY + "x"}).status_code == 401
        assert api.get(path, headers={"X-Operator-Key": ""}).status_code == 401
        assert api.get(path, headers=OPERATOR).status_code == 200
        assert api.get(path, headers=bearer(KEY)).status_code == 200  # as Prometheus sends it
    assert secured.get(path, headers=device).status_code == 401  # a device token is not the operator's


@pytest.fixture
def live_secured(home, monkeypatch):
    monkeypatch.setenv("POCKETRANK_OPERATOR_KEY", KEY)
    monkeypatch.setenv("POCKETRANK_REQUIRE_DEVICE_TOKEN", "1")
    with LocalServer(home) as server:
        yield server


@pytest.mark.slow
def test_a_real_server_and_a_real_device_with_tokens(live_secured, home, public_key, tmp_path):
    url = live_secured.url
    with httpx.Client(base_url=url, timeout=10) as c:
        token = c.post("/v1/devices", json={"device_id": "phone-1", "users": ["196"]}, headers=OPERATOR).json()["token"]
        hijack = c.post("/v1/devices", json={"device_id": "phone-1", "users": ["186"]}, headers=OPERATOR)
        assert hijack.status_code == 409
        assert c.post("/v1/devices", json={"device_id": "phone-2", "users": ["186"]}).status_code == 401
        assert c.get("/v1/recommendations", params={"user_id": "196"}).status_code == 401
        assert c.get("/v1/recommendations", params={"user_id": "186"}, headers=bearer(token)).status_code == 403
        assert c.get("/v1/metrics/summary").status_code == 401
        assert c.get("/v1/metrics/summary", headers=OPERATOR).status_code == 200

    phone = EdgeClient(tmp_path / "phone.sqlite", public_key, base_url=url, device_id="phone-1", token=token,
                       latency_budget=5.0)
    try:
        phone.sync(["196"])
        assert phone.recommend("196", k=5).source == "server"
        rec = phone.recommend("196", k=5)
        phone.track("196", "click", rec.items[0].item_id)
        phone.flush()
        status = phone.status()
        assert status["outbox"] == 0 and status["rejected"] == 0  # its events name it: accepted
    finally:
        phone.close()
    # A device without a token is refused by the server and still answers from what it holds.
    stranger = EdgeClient(tmp_path / "stranger.sqlite", public_key, base_url=url, device_id="phone-9",
                          latency_budget=5.0)
    try:
        assert stranger.recommend("196", k=5).source != "server"
    finally:
        stranger.close()
