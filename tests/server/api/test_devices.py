"""Device tokens: registration, scoping to the device's users, revocation, rate limits."""

import pytest

from server.api.app import create_app
from server.config import Config


@pytest.fixture
def secured(home, monkeypatch):
    monkeypatch.setenv("POCKETRANK_OPERATOR_KEY", "operator-secret")
    monkeypatch.setenv("POCKETRANK_REQUIRE_DEVICE_TOKEN", "1")
    monkeypatch.setenv("POCKETRANK_SYNC_RATE", "1")
    monkeypatch.setenv("POCKETRANK_SYNC_BURST", "3")
    return create_app(Config.from_env(home=home)).test_client()


def _register(api, device="phone-1", users=("196", "186")):
    return api.post("/v1/devices", json={"device_id": device, "users": list(users)},
                    headers={"X-Operator-Key": "operator-secret"})


def test_a_device_sees_only_its_own_users(secured):
    resp = _register(secured)
    assert resp.status_code == 201
    token = resp.get_json()["token"]
    auth = {"Authorization": f"Bearer {token}"}
    assert secured.get("/v1/sync?users=196", headers=auth).status_code == 200
    denied = secured.get("/v1/sync?users=196,22", headers=auth)
    assert denied.status_code == 403 and "22" in denied.get_json()["message"]


def test_requests_without_or_with_bad_tokens_are_401(secured):
    assert secured.get("/v1/sync?users=196").status_code == 401
    assert secured.get("/v1/sync?users=196", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_registration_needs_the_operator_key(secured):
    resp = secured.post("/v1/devices", json={"device_id": "x", "users": ["1"]})
    assert resp.status_code == 401
    bad = secured.post("/v1/devices", json={"device_id": "x", "users": []},
                       headers={"X-Operator-Key": "operator-secret"})
    assert bad.status_code == 400 and bad.get_json()["field"] == "users"


def test_a_revoked_or_rotated_token_stops_working(secured):
    old = _register(secured).get_json()["token"]
    new = _register(secured).get_json()["token"]  # re-registering rotates the token
    assert secured.get("/v1/sync?users=196", headers={"Authorization": f"Bearer {old}"}).status_code == 401
    assert secured.get("/v1/sync?users=196", headers={"Authorization": f"Bearer {new}"}).status_code == 200
    assert secured.delete("/v1/devices/phone-1", headers={"X-Operator-Key": "operator-secret"}).status_code == 204
    resp = secured.get("/v1/sync?users=196", headers={"Authorization": f"Bearer {new}"})
    assert resp.status_code == 401 and "revoked" in resp.get_json()["message"]
    assert secured.delete("/v1/devices/phone-1", headers={"X-Operator-Key": "operator-secret"}).status_code == 404


def test_sync_is_rate_limited_per_device(secured):
    auth = {"Authorization": f"Bearer {_register(secured).get_json()['token']}"}
    codes = [secured.get("/v1/sync?cursor=1&users=196", headers=auth).status_code for _ in range(5)]
    assert codes[:3] == [304, 304, 304] and codes[-1] == 429
    limited = secured.get("/v1/sync?cursor=1&users=196", headers=auth)
    assert int(limited.headers["Retry-After"]) >= 1


def test_tokens_are_stored_hashed(secured, home):
    import sqlite3

    token = _register(secured).get_json()["token"]
    with sqlite3.connect(home / "devices.sqlite") as db:
        stored = db.execute("SELECT token_sha256 FROM devices").fetchone()[0]
    assert token not in stored and len(stored) == 64


def test_catalogue_writes_need_the_operator_key(secured):
    item = {"item_id": 999_001, "title": "Tent", "category": "Outdoor", "price": 80}
    assert secured.post("/v1/items", json={"items": [item]}).status_code == 401
    ok = secured.post("/v1/items", json={"items": [item]}, headers={"X-Operator-Key": "operator-secret"})
    assert ok.status_code == 200 and ok.get_json()["created"] == 1
