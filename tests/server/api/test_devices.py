"""Device tokens: registration, scoping to the device's users, revocation, rate limits; the operator key."""

import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pocketrank.server.api.app import create_app
from pocketrank.server.api.device_registry import DeviceRegistry, DeviceTaken
from pocketrank.server.config import Config
from pocketrank.shared.errors import ValidationError

KEY = "operator-secret-0123456789"
OPERATOR = {"X-Operator-Key": KEY}
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def secured(home, monkeypatch):
    monkeypatch.setenv("POCKETRANK_OPERATOR_KEY", KEY)
    monkeypatch.setenv("POCKETRANK_REQUIRE_DEVICE_TOKEN", "1")
    monkeypatch.setenv("POCKETRANK_SYNC_RATE", "1")
    monkeypatch.setenv("POCKETRANK_SYNC_BURST", "3")
    return create_app(Config.from_env(home=home)).test_client()


def _register(api, device="phone-1", users=("196", "186")):
    return api.post("/v1/devices", json={"device_id": device, "users": list(users)}, headers=OPERATOR)


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
    wrong = secured.post("/v1/devices", json={"device_id": "x", "users": ["1"]},
                         headers={"X-Operator-Key": KEY[:-1] + "x"})
    assert wrong.status_code == 401
    bad = secured.post("/v1/devices", json={"device_id": "x", "users": []}, headers=OPERATOR)
    assert bad.status_code == 400 and bad.get_json()["field"] == "users"
    assert secured.delete("/v1/devices/x").status_code == 401


def test_a_registered_id_is_never_taken_over(secured):
    token = _register(secured).get_json()["token"]
    auth = {"Authorization": f"Bearer {token}"}
    again = _register(secured, users=("22",))  # the same id, other users: refused, nothing changes
    assert again.status_code == 409 and again.get_json()["field"] == "device_id"
    assert "token" not in again.get_json()
    assert secured.get("/v1/sync?users=196", headers=auth).status_code == 200
    assert secured.get("/v1/sync?users=22", headers=auth).status_code == 403


def test_a_revoked_token_stops_working_and_its_id_is_never_reused(secured):
    token = _register(secured).get_json()["token"]
    auth = {"Authorization": f"Bearer {token}"}
    assert secured.delete("/v1/devices/phone-1", headers=OPERATOR).status_code == 204
    resp = secured.get("/v1/sync?users=196", headers=auth)
    assert resp.status_code == 401 and "revoked" in resp.get_json()["message"]
    reuse = _register(secured)
    assert reuse.status_code == 409 and "revoked" in reuse.get_json()["message"]
    assert secured.get("/v1/sync?users=196", headers=auth).status_code == 401
    assert secured.delete("/v1/devices/phone-1", headers=OPERATOR).status_code == 404
    assert _register(secured, device="phone-1b").status_code == 201  # a replacement gets a new id


def test_racing_registrations_of_one_id_give_one_token(tmp_path):
    registry = DeviceRegistry(tmp_path / "devices.sqlite")
    won, lost, gate = [], [], threading.Barrier(8)

    def register(i):
        gate.wait()
        try:
            won.append(registry.register("phone-race", [f"u{i}"]))
        except DeviceTaken:
            lost.append(i)

    threads = [threading.Thread(target=register, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(lost) == 7
    device, token = won[0]
    assert registry.authenticate(token) == device


def test_sync_is_rate_limited_per_device(secured):
    auth = {"Authorization": f"Bearer {_register(secured).get_json()['token']}"}
    codes = [secured.get("/v1/sync?cursor=1&users=196", headers=auth).status_code for _ in range(5)]
    assert codes[:3] == [304, 304, 304] and codes[-1] == 429
    limited = secured.get("/v1/sync?cursor=1&users=196", headers=auth)
    assert int(limited.headers["Retry-After"]) >= 1


def test_tokens_are_stored_hashed(secured, home):
    token = _register(secured).get_json()["token"]
    with sqlite3.connect(home / "devices.sqlite") as db:
        stored = db.execute("SELECT token_sha256 FROM devices").fetchone()[0]
    assert token not in stored and len(stored) == 64


def test_catalogue_writes_need_the_operator_key(secured):
    item = {"item_id": 999_001, "title": "Tent", "category": "Outdoor", "price": 80}
    assert secured.post("/v1/items", json={"items": [item]}).status_code == 401
    ok = secured.post("/v1/items", json={"items": [item]}, headers=OPERATOR)
    assert ok.status_code == 200 and ok.get_json()["created"] == 1


def test_tokens_cannot_be_required_without_an_operator_key(home, monkeypatch):
    monkeypatch.setenv("POCKETRANK_REQUIRE_DEVICE_TOKEN", "1")
    with pytest.raises(ValidationError) as exc:
        Config.from_env(home=home)
    assert exc.value.field == "POCKETRANK_OPERATOR_KEY" and "token_urlsafe" in exc.value.message
    with pytest.raises(ValidationError):  # a Config built in code is held to the same rule
        create_app(Config(home=home, require_device_token=True))
    with pytest.raises(ValidationError, match="at least 16"):  # a key short enough to guess
        create_app(Config(home=home, operator_key="letmein"))


@pytest.mark.slow
@pytest.mark.parametrize("command", ["serve", "gunicorn"])
def test_a_server_process_refuses_to_start_with_tokens_and_no_operator_key(home, command):
    env = {"PATH": "/usr/bin:/bin", "POCKETRANK_HOME": str(home), "POCKETRANK_REQUIRE_DEVICE_TOKEN": "1",
           "POCKETRANK_BIND": "127.0.0.1:0", "PYTHONPATH": str(REPO)}
    args = ([sys.executable, "-m", "pocketrank", "serve", "--port", "0"] if command == "serve" else
            [sys.executable, "-m", "gunicorn", "-c", "python:pocketrank.server.gunicorn_conf", "pocketrank.server.wsgi:app"])
    done = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "POCKETRANK_OPERATOR_KEY" in done.stdout + done.stderr
