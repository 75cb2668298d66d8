"""Hostile JSON at the door (nesting, huge numbers, NaN) and reused event ids, on the real Flask app.

Every case must be a 4xx that names what is wrong and logs nothing, never a 500.
"""

import pytest

from tests.factories import event_dict as ev

JSON = {"Content-Type": "application/json"}
HUGE = "1" + "0" * 400  # an integer no float holds
ENDPOINTS = ["/v1/events", "/v1/items", "/v1/devices"]


@pytest.fixture
def api(synthetic_app):
    return synthetic_app.test_client()


@pytest.fixture
def store(synthetic_app):
    return synthetic_app.extensions["pocketrank"].store


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("depth", [33, 1000, 50_000])
def test_deep_nesting_is_a_400_naming_the_body(api, path, depth):
    resp = api.post(path, data="[" * depth + "]" * depth, headers=JSON)
    assert resp.status_code == 400
    assert resp.get_json()["field"] == "body" and "nested more than 32 levels" in resp.get_json()["message"]


def test_nesting_within_the_cap_reaches_the_schema(api):
    inner = "[" * 30 + "]" * 30  # 32 levels with the object and the events list around it
    resp = api.post("/v1/events", data='{"events": [' + inner + "]}", headers=JSON)
    assert resp.status_code == 422 and resp.get_json()["results"][0]["field"] == "event"


EVENT_TEMPLATE = ('{"events":[{"event_id":"n1","user_id":"u","device_id":"d","type":"click","item_id":"7",'
                  '"timestamp":%s}]}')
ITEM_TEMPLATE = '{"items":[{"item_id":"p-1","title":"Tent","category":"Outdoor","price":%s}]}'
NUMBERS = [(HUGE, "integers must be within"), (HUGE + ".0", "too large for a 64-bit float"),
           ("1e400", "too large for a 64-bit float"), ("-1e400", "too large for a 64-bit float"),
           ("NaN", "not JSON"), ("Infinity", "not JSON"), ("-Infinity", "not JSON"),
           ("9223372036854775808", "integers must be within")]


@pytest.mark.parametrize("template", [EVENT_TEMPLATE, ITEM_TEMPLATE], ids=["timestamp", "price"])
@pytest.mark.parametrize("number, words", NUMBERS, ids=[n[:12] for n, _ in NUMBERS])
def test_numbers_no_field_can_hold_are_refused_at_the_door(api, store, template, number, words):
    resp = api.post("/v1/events" if "events" in template else "/v1/items", data=template % number, headers=JSON)
    assert resp.status_code == 400, resp.data
    assert resp.get_json()["field"] == "body" and words in resp.get_json()["message"]
    assert store.count_events(["n1"]) == 0 and store.item_index(["p-1"]) == {}


@pytest.mark.parametrize("price", ["1e39", "1e9", "1000000001", "-1", "9223372036854775807"])
def test_a_price_past_the_bound_is_rejected_by_name_and_stores_nothing(api, store, price):
    within = price == "1e9"
    body = api.post("/v1/items", data=ITEM_TEMPLATE % price, headers=JSON).get_json()
    assert body["created"] == (1 if within else 0)
    if not within:
        assert body["results"][0]["field"] == "price" and "between 0 and 1e+09" in body["results"][0]["reason"]
        assert store.item_index(["p-1"]) == {}


@pytest.mark.parametrize("field, value", [("stock", 10**13), ("stock", -1), ("year", 10**18), ("created_at", 10**18),
                                          ("created_at", 1e300)])
def test_every_other_number_of_a_product_is_bounded(api, field, value):
    item = {"item_id": "p-2", "title": "Tent", "category": "Outdoor", field: value}
    body = api.post("/v1/items", json={"items": [item]}).get_json()
    assert body["rejected"] == 1 and body["results"][0]["field"] == field


@pytest.mark.parametrize("value", [10**18, -(10**18), 1e300, 2**63 - 1])
def test_a_timestamp_out_of_range_is_rejected_per_event_and_its_neighbours_are_logged(api, store, value):
    batch = [ev("ok-1"), {**ev("bad-ts"), "timestamp": value}]
    resp = api.post("/v1/events", json={"events": batch})
    assert resp.status_code == 422
    assert [r["status"] for r in resp.get_json()["results"]] == ["accepted", "rejected"]
    assert resp.get_json()["results"][1]["field"] == "timestamp"
    assert store.count_events(["ok-1", "bad-ts"]) == 1


def test_a_body_that_is_not_json_or_not_utf8_is_a_400(api):
    for data in (b"{", b"\xff\xfe{}", b"null", b""):
        resp = api.post("/v1/events", data=data, headers=JSON)
        assert resp.status_code == 400 and resp.get_json()["field"] == "body", data


def test_a_reused_event_id_with_other_content_is_a_conflict_and_the_first_event_stays(api, store):
    first = ev("reused", item=7)
    assert api.post("/v1/events", json={"events": [first]}).get_json()["accepted"] == 1
    retry = api.post("/v1/events", json={"events": [first]})  # the same event again: a retry
    assert retry.status_code == 200 and retry.get_json()["results"] == [{"event_id": "reused", "status": "duplicate"}]

    other = {**first, "item_id": 8}
    resp = api.post("/v1/events", json={"events": [other, ev("fresh")]})
    assert resp.status_code == 422
    body = resp.get_json()
    assert (body["accepted"], body["duplicate"], body["conflict"], body["rejected"]) == (1, 0, 1, 0)
    assert body["results"][0]["status"] == "conflict" and body["results"][0]["field"] == "event_id"
    assert "events[0] (reused) event_id: already logged with different content" in body["message"]
    logged = [e for e in store.iter_log() if e.event.event_id == "reused"]
    assert len(logged) == 1 and logged[0].event.item_id == store.item_index(["7"])["7"]


def test_within_one_batch_a_repeat_is_a_duplicate_and_a_reuse_a_conflict(api):
    a = ev("twice", item=7)
    body = api.post("/v1/events", json={"events": [a, a, {**a, "timestamp": a["timestamp"] - 1}]}).get_json()
    assert [r["status"] for r in body["results"]] == ["accepted", "duplicate", "conflict"]
