"""Rate limits on every endpoint, per device token (per address without one), through the real Flask app.

Cross-process sharing (two real gunicorn workers, Redis or not) is in tests/server/test_limits_live.py.
"""

import pytest

from pocketrank.server.api.app import create_app
from pocketrank.server.config import Config
from tests.factories import event_dict as ev

OPERATOR = {"X-Operator-Key": "operator-secret-key"}


@pytest.fixture
def make(synthetic_app, store_config):
    """An app on the seeded synthetic home with small limits (the defaults are far above a device's needs)."""
    # Windows of thousands of seconds: a sliding window turning over during a test lets one more request in.
    def build(**limits):
        settings = {"operator_key": "operator-secret-key", "request_rate": 0.001, "request_burst": 5, "address_rate": 0.001,
                    "address_burst": 5, **limits}
        # The store's settings (Redis: a key prefix of this test's own, so counts start at zero).
        fields = {f: getattr(store_config, f) for f in ("home", "store", "redis_url", "redis_prefix")}
        return create_app(Config(**fields, **settings)).test_client()
    return build


def token(api, device, users=("u-1",)) -> dict:
    resp = api.post("/v1/devices", json={"device_id": device, "users": list(users)}, headers=OPERATOR)
    assert resp.status_code == 201
    return {"Authorization": f"Bearer {resp.get_json()['token']}"}


REQUESTS = [("get", "/healthz", {}), ("get", "/v1/recommendations?user_id=u-1", {}),
            ("post", "/v1/events", {"json": {"events": [ev("r1")]}}), ("get", "/v1/users/u-1", {}),
            ("get", "/openapi.json", {}), ("get", "/v1/items/7", {})]


@pytest.mark.parametrize("method, path, kwargs", REQUESTS, ids=[r[1] for r in REQUESTS])
def test_every_endpoint_counts_and_the_429_says_when_to_retry(make, method, path, kwargs):
    api = make()
    for _ in range(5):
        assert api.get("/healthz").status_code == 200
    resp = getattr(api, method)(path, **kwargs)
    assert resp.status_code == 429
    assert int(resp.headers["Retry-After"]) >= 1
    body = resp.get_json()
    assert body["error"] == "too_many_requests" and "5 per 5000 second" in body["message"]


def test_an_address_gets_a_budget_apart_from_a_device_s(make):
    api = make(address_burst=8, address_rate=0.001)
    auth = token(api, "phone-x")
    assert [api.get("/healthz").status_code for _ in range(9)] == [200] * 8 + [429]
    assert [api.get("/healthz", headers=auth).status_code for _ in range(6)] == [200] * 5 + [429]


def test_each_device_has_its_own_budget_behind_one_address(make):
    api = make()
    a, b = token(api, "phone-a"), token(api, "phone-b")  # the operator's calls are not counted
    assert [api.get("/healthz", headers=a).status_code for _ in range(6)] == [200] * 5 + [429]
    assert [api.get("/healthz", headers=b).status_code for _ in range(5)] == [200] * 5  # same address, own budget
    assert api.get("/healthz").status_code == 200  # nor does it take the anonymous calls' budget
    assert api.get("/healthz", headers=a).status_code == 429


def test_anonymous_calls_share_their_address_and_other_addresses_are_not_held(make):
    api = make()
    assert [api.get("/healthz").status_code for _ in range(6)] == [200] * 5 + [429]
    assert api.get("/healthz", environ_base={"REMOTE_ADDR": "192.0.2.7"}).status_code == 200


def test_inventing_tokens_buys_no_fresh_budget(make):
    api = make(require_device_token=True)
    codes = [api.get("/v1/sync?users=u-1", headers={"Authorization": f"Bearer made-up-{i}"}).status_code
             for i in range(7)]
    assert codes == [401] * 5 + [429] * 2


def test_the_operator_key_is_not_limited_and_a_wrong_key_is(make):
    api = make()
    assert {api.get("/healthz", headers=OPERATOR).status_code for _ in range(20)} == {200}
    wrong = {"X-Operator-Key": "guess"}
    assert [api.get("/healthz", headers=wrong).status_code for _ in range(6)][-1] == 429


def test_sync_has_its_own_tighter_limit_on_top(make):
    api = make(request_burst=100, request_rate=10, address_burst=100, address_rate=10, sync_burst=2, sync_rate=0.0005)
    auth = token(api, "phone-s")
    codes = [api.get("/v1/sync?cursor=1&users=u-1", headers=auth).status_code for _ in range(3)]
    assert codes[-1] == 429 and 429 not in codes[:2]
    assert api.get("/healthz", headers=auth).status_code == 200  # other endpoints still answer


def test_behind_a_trusted_proxy_each_forwarded_address_counts_on_its_own(make):
    direct = make()
    spoofed = [direct.get("/healthz", headers={"X-Forwarded-For": f"198.51.100.{i}"}).status_code for i in range(6)]
    assert spoofed[-1] == 429  # without proxy_hops a client cannot name itself anew
    proxied = make(proxy_hops=1)
    for i in range(3):
        fwd = {"X-Forwarded-For": f"198.51.100.{i}"}
        assert [proxied.get("/healthz", headers=fwd).status_code for _ in range(6)] == [200] * 5 + [429]


def test_a_zero_rate_turns_the_limits_off(make):
    api = make(request_rate=0, address_rate=0, sync_rate=0)
    assert {api.get("/healthz").status_code for _ in range(30)} == {200}


def test_defaults_leave_a_device_s_cadence_alone(make):
    api = make(request_rate=Config.request_rate, request_burst=Config.request_burst,
               address_rate=Config.address_rate, address_burst=Config.address_burst)
    auth = token(api, "phone-d")
    # A generous session: 50 uploads, 10 syncs and 100 recommendation calls back to back.
    codes = [api.post("/v1/events", json={"events": [ev(f"d{i}")]}, headers=auth).status_code for i in range(50)]
    codes += [api.get("/v1/sync?users=u-1", headers=auth).status_code for _ in range(10)]
    codes += [api.get("/v1/recommendations?user_id=u-1", headers=auth).status_code for _ in range(100)]
    assert 429 not in codes


def test_the_sdk_backs_off_for_the_retry_after_and_loses_nothing(make, tmp_path):
    import httpx

    from pocketrank.edge_runtime import EdgeClient
    from pocketrank.edge_runtime.transport import Transport

    api = make(address_burst=2, address_rate=0.001)  # 2 per 2,000 s for this address (the SDK sends no token here)
    transport = Transport(client=httpx.Client(transport=httpx.WSGITransport(app=api.application),
                                              base_url="http://test"))
    device = EdgeClient(tmp_path / "device.sqlite", None, transport=transport, device_id="d1", batch_size=1)
    try:
        for _ in range(5):
            device.track("u-1", "click", "7")
        result = device.flush()
        assert (result.acknowledged, result.remaining) == (2, 3) and "429" in (result.error or "")
        assert result.retry_in is not None and result.retry_in >= 1  # the server's Retry-After, as a floor
        assert device.flush().sent == 0  # still backing off: not one request more
        assert device.status()["outbox"] == 3
    finally:
        device.close()
