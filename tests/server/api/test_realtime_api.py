"""Ingestion, fresh embeddings, recommendations with business rules and new products, on both stores."""

import json
import random
import time

import pytest

from tests.factories import event_dict as ev
from tests.server.conftest import CATEGORIES, MODEL


@pytest.fixture
def api(synthetic_app):
    return synthetic_app.test_client()


@pytest.fixture
def serving(synthetic_app):
    return synthetic_app.extensions["pocketrank"]


def category(serving, item: dict) -> str:
    """The category of a product the API named (by its own id); the catalogue is keyed by the store's index."""
    return serving.catalogue.category[serving.catalogue.index_of[item["item_id"]]]


def post(api, events):
    resp = api.post("/v1/events", json={"events": events})
    assert resp.status_code == 200, resp.data
    return resp.get_json()


def test_an_accepted_event_is_in_the_embedding_when_the_answer_arrives(api, serving):
    assert api.get("/v1/users/u-1").status_code == 404
    b = ev("b", item=13, etype="purchase")
    post(api, [ev("a"), b])
    body = api.get("/v1/users/u-1?recent=5").get_json()
    assert body["n_events"] == 2 and body["log_position"] > 0
    # Events may name a product by an integer (taken as its digits); the API answers product ids.
    assert [r["item_id"] for r in body["recent"]] == ["7", "13"] and len(body["embedding"]) == 64
    assert post(api, [b])["duplicate"] == 1  # a retry resends the same event
    assert api.get("/v1/users/u-1").get_json()["n_events"] == 2  # a retry is not folded twice


def _without(event, key):
    return {k: v for k, v in event.items() if k != key}


# Bad events inside an otherwise good batch: (kind, the bad event, the field named, words in the reason).
BAD_EVENTS = [
    ("unknown event type", {**ev("bad"), "type": "like"}, "type", "must be one of"),
    ("missing user_id", _without(ev("bad"), "user_id"), "user_id", "required"),
    ("missing timestamp", _without(ev("bad"), "timestamp"), "timestamp", "required"),
    ("missing item_id", _without(ev("bad"), "item_id"), "item_id", "required"),
    ("unknown item", ev("bad", item=999_999), "item_id", "'999999' is not in the catalogue"),
    ("unknown product id", ev("bad", item="SKU-nope"), "item_id", "'SKU-nope' is not in the catalogue; add it"),
    ("item id not a string", ev("bad", item=7.5), "item_id", "must be a string (the product's own id)"),
    ("malformed user id", ev("bad", user="no spaces allowed"), "user_id", ""),
    ("far-future timestamp", {**ev("bad"), "timestamp": time.time() + 3 * 86_400}, "timestamp", "in the future"),
    ("not an object", "not an object", "event", "JSON object"),
]


@pytest.mark.parametrize("kind, bad, field, words", BAD_EVENTS, ids=[b[0] for b in BAD_EVENTS])
def test_a_batch_with_a_bad_event_is_422_naming_it_and_keeps_the_good_ones(api, serving, kind, bad, field, words):
    early = ev("early-1")
    assert post(api, [early, ev("early-2", item=8)])["accepted"] == 2
    batch = [early, ev("late-1", item=9), bad]
    resp = api.post("/v1/events", json={"events": batch})
    assert resp.status_code == 422, kind
    body = resp.get_json()
    assert body["error"] == "invalid_events" and body["field"] == "events"
    assert (body["accepted"], body["duplicate"], body["rejected"]) == (1, 1, 1)
    assert [r["status"] for r in body["results"]] == ["duplicate", "accepted", "rejected"]
    assert body["results"][2]["field"] == field and words in body["results"][2]["reason"]
    assert "events[2]" in body["message"] and f"{field}: " in body["message"] and words in body["message"]
    # The accepted events are logged and folded exactly once, also when the client retries the batch.
    assert api.post("/v1/events", json={"events": batch}).get_json()["accepted"] == 0
    assert serving.store.count_events(["early-1", "early-2", "late-1", "bad"]) == 3
    assert api.get("/v1/users/u-1").get_json()["n_events"] == 3


# Whole-request problems: nothing in the request is logged. (kind, request, status, field, words in the message)
BAD_REQUESTS = [
    ("malformed JSON", {"data": "{not json", "content_type": "application/json"}, 400, "body", "JSON"),
    ("wrong content type", {"data": "{}", "content_type": "text/plain"}, 400, "body", "Content-Type"),
    ("events not a list", {"json": {"events": {"a": 1}}}, 400, "events", "must be a list"),
    ("no events key", {"json": {"event": []}}, 400, "events", "must be a list"),
    ("oversized batch", {"json": {"events": [ev(f"x{i}") for i in range(501)]}}, 400, "events", "at most 500"),
    ("body over the byte limit", {"data": "x" * (2 << 20), "content_type": "application/json"}, 413, None, "large"),
]


@pytest.mark.parametrize("kind, kwargs, status, field, words", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_a_bad_request_is_4xx_naming_the_problem_and_logs_nothing(api, serving, kind, kwargs, status, field, words):
    assert post(api, [ev("early-1"), ev("early-2", item=8)])["accepted"] == 2
    resp = api.post("/v1/events", **kwargs)
    assert resp.status_code == status, kind
    body = resp.get_json()
    assert body.get("field") == field and words.lower() in body["message"].lower()
    assert serving.store.count_events(["early-1", "early-2", "x0"]) == 2
    assert api.get("/v1/users/u-1").get_json()["n_events"] == 2


def test_a_user_never_seen_before_is_how_a_new_user_arrives(api):
    assert api.get("/v1/users/brand-new").status_code == 404
    assert post(api, [ev("new-user-1", user="brand-new")])["accepted"] == 1
    assert api.get("/v1/users/brand-new").get_json()["n_events"] == 1
    assert api.get("/v1/items/999999").status_code == 404
    assert api.get("/v1/users/bad%20id").status_code == 400


def test_a_device_token_limits_events_to_the_devices_users(api, serving):
    token = api.post("/v1/devices", json={"device_id": "phone-9", "users": ["u-1"]}).get_json()["token"]
    auth = {"Authorization": f"Bearer {token}"}
    batch = [ev("mine", device="phone-9"), ev("theirs", user="u-2", device="phone-9"),
             ev("spoofed", device="phone-1")]  # a device speaks only for its own users, as itself
    resp = api.post("/v1/events", json={"events": batch}, headers=auth)
    assert resp.status_code == 422
    body = resp.get_json()
    assert [r["status"] for r in body["results"]] == ["accepted", "rejected", "rejected"]
    assert body["results"][1]["field"] == "user_id" and "u-2 is not a user of this device" in body["message"]
    assert body["results"][2]["field"] == "device_id" and "phone-9" in body["results"][2]["reason"]
    assert api.post("/v1/events", json={"events": [ev("x")]}, headers={"Authorization": "Bearer nope"}
                    ).status_code == 401
    assert serving.store.count_events(["mine", "theirs", "spoofed", "x"]) == 1


def test_paths_personal_segment_and_popular_say_who_answered(api, serving):
    from pocketrank.server.jobs.features import features_job
    from pocketrank.server.online import segments

    for u, cat in (("a1", 0), ("a2", 0), ("b1", 1)):
        post(api, [ev(f"{u}-{i}", user=u, item=6 * i + cat + 6) for i in range(5)])
    features_job(serving.store, profiles={"a1": {"gender": "F"}, "a2": {"gender": "F"}, "b1": {"gender": "M"}},
                 min_segment_users=1)
    serving.refresh_stats()
    personal = api.get("/v1/recommendations?user_id=a1&k=5").get_json()
    seg = api.get("/v1/recommendations?user_id=new-1&k=5&gender=F").get_json()
    pop = api.get("/v1/recommendations?user_id=new-2&k=5").get_json()
    unknown_seg = api.get("/v1/recommendations?user_id=new-3&k=5&gender=X").get_json()
    assert (personal["path"], seg["path"], pop["path"], unknown_seg["path"]) == (
        "personal", "segment", "popular", "popular")
    assert seg["segment"] == "gender=F" and personal["model_version"] == seg["model_version"] == MODEL
    # The F segment is the a-users' mean, who like category 0: its list leans there.
    cats = [category(serving, i) for i in seg["items"]]
    assert cats.count(CATEGORIES[0]) >= 4
    assert [i["score"] for i in pop["items"]] == [0.0] * 5
    assert api.get("/v1/recommendations?user_id=x&gender=a%20b").status_code == 400
    assert segments.lookup({}, {"gender": "F"}) is None


def test_out_of_stock_and_purchased_items_are_dropped(api, serving):
    post(api, [ev(f"p{i}", user="s1", item=6 * i + 6) for i in range(4)])
    first = [i["item_id"] for i in api.get("/v1/recommendations?user_id=s1&k=10").get_json()["items"]]
    bought, gone = first[0], first[1]
    post(api, [ev("buy", user="s1", item=bought, etype="purchase")])
    resp = api.post("/v1/items", json={"items": [{"item_id": gone, "in_stock": False}]})
    assert resp.get_json()["results"] == [{"item_id": gone, "status": "updated", "provisional": False}]
    after = [i["item_id"] for i in api.get("/v1/recommendations?user_id=s1&k=10").get_json()["items"]]
    assert bought not in after and gone not in after and len(after) == 10
    assert api.get(f"/v1/items/{gone}").get_json()["in_stock"] is False


def test_rules_cap_categories_pin_boost_explore_and_penalise_exposure(synthetic_app, api, serving):
    from pocketrank.server.online.ranker import Rules

    post(api, [ev(f"r{i}", user="r1", item=6 * i + 6) for i in range(4)])
    base = api.get("/v1/recommendations?user_id=r1&k=10").get_json()["items"]
    base_ids = [i["item_id"] for i in base]

    def ranked(**rules):
        serving.rules = Rules(**rules)
        serving._ranker_key = None  # rebuild the ranker with these rules
        return api.get("/v1/recommendations?user_id=r1&k=10").get_json()["items"]

    capped = ranked(max_per_category=2)
    per_cat = {}
    for i in capped:
        c = category(serving, i)
        per_cat[c] = per_cat.get(c, 0) + 1
    assert max(per_cat.values()) <= 2 and len(capped) == 10

    # Rules name products by the store's index (the synthetic catalogue's product "N" is index N).
    index_of = serving.catalogue.index_of
    pinned = ranked(pinned=(index_of["299"], index_of["6"]))  # 6 was clicked: a pin never shows a consumed item
    assert pinned[0]["item_id"] == "299" and pinned[0]["slot"] == "pinned"
    assert "6" not in [i["item_id"] for i in pinned]

    boosted = ranked(boosts={index_of[base_ids[9]]: 5.0})
    assert boosted[0]["item_id"] == base_ids[9]

    serving.rng = random.Random(1)
    explored = ranked(explore_position=3)
    assert explored[2].get("slot") == "explore" and explored[2]["item_id"] not in base_ids
    assert [i["item_id"] for i in explored[:2]] == base_ids[:2]

    post(api, [ev(f"imp{n}", user=f"viewer{n % 7}", item=base_ids[0], etype="impression") for n in range(40)])
    serving.refresh_stats()
    assert serving.exposures[index_of[base_ids[0]]] == 40
    penalised = ranked(exposure_cap=10, exposure_penalty=1.0)
    assert base_ids[0] not in [i["item_id"] for i in penalised[:3]]

    # The popularity knob: the popular list's items lose score, the most popular the most.
    post(api, [ev(f"pop{n}", user=f"fan{n % 5}", item=base_ids[n % 3], etype="click") for n in range(15)])
    serving.refresh_stats()
    popular = set(serving.popular)
    head = {i["item_id"] for i in ranked() if index_of[i["item_id"]] in popular}
    assert head >= set(base_ids[:3])  # this user's list holds popular products when nothing tilts it
    tilted = [i["item_id"] for i in ranked(popular_penalty=5000.0)]
    assert len(tilted) == 10 and not head & set(tilted)


def test_a_new_product_gets_a_provisional_vector_and_is_recommended_at_once(api, serving):
    user_items = [6 * i + 12 for i in range(6)]  # all in CATEGORIES[0]
    post(api, [ev(f"n{i}", user="n1", item=it) for i, it in enumerate(user_items)])
    sku = "BOOKS/5001 special"  # the marketplace's own id: any printable text, slashes and spaces too
    new = {"item_id": sku, "title": "Books special edition", "category": CATEGORIES[0], "price": 12.5}
    resp = api.post("/v1/items", json={"items": [new, {"item_id": " x"}, {"item_id": 5002}]})
    body = resp.get_json()
    assert body["created"] == 1 and body["rejected"] == 2
    assert body["results"][0] == {"item_id": sku, "status": "created", "provisional": True}
    assert [r["field"] for r in body["results"][1:]] == ["item_id", "title"]
    assert body["results"][2]["item_id"] == "5002"  # an integer id is the product id of its digits
    info = api.get(f"/v1/items/{sku}").get_json()
    assert info["item_id"] == sku and info["provisional"] is True and info["has_vector"] is True
    # The store gave it the next free index, not one derived from its id.
    assert serving.catalogue.index_of[sku] == 301
    recs = [i["item_id"] for i in api.get("/v1/recommendations?user_id=n1&k=20").get_json()["items"]]
    assert sku in recs
    # Events may name it now, and it moves the user's embedding; the user's record names it too.
    assert post(api, [ev("n-new", user="n1", item=sku)])["accepted"] == 1
    assert api.get("/v1/users/n1?recent=1").get_json()["recent"][0]["item_id"] == sku
    assert api.post("/v1/items", json={"items": [new] * 501}).status_code == 400


def test_window_features_feed_the_ranker(api, serving):
    from pocketrank.server.jobs.features import features_job

    post(api, [ev(f"w{i}", user="w1", item=6 * i + 6 + (i % 2)) for i in range(6)])
    before = api.get("/v1/recommendations?user_id=w1&k=10").get_json()["items"]
    features_job(serving.store, as_of=time.time() + 1)
    feats = api.get("/v1/users/w1").get_json()["features"]
    assert feats["1d"]["counts"]["click"] == 6 and feats["30d"]["counts"]["click"] == 6
    assert set(feats["7d"]["categories"]) == {CATEGORIES[0], CATEGORIES[1]}
    from pocketrank.server.online.ranker import Rules

    serving.rules, serving._ranker_key = Rules(category_weight=1.0), None
    after = api.get("/v1/recommendations?user_id=w1&k=10").get_json()["items"]
    cats = {category(serving, i) for i in after}
    assert cats <= {CATEGORIES[0], CATEGORIES[1]} and after != before


def test_recommendation_answers_are_json_with_rank_and_model(api):
    post(api, [ev("j1", user="j")])
    body = json.loads(api.get("/v1/recommendations?user_id=j&k=3").data)
    assert [i["rank"] for i in body["items"]] == [1, 2, 3] and body["source"] == "server"


def test_a_new_category_path_brings_its_own_levels_and_bad_text_is_a_400(api):
    made = {"item_id": "SKU-path", "title": "Secateurs", "category": "Home > Kitchen"}
    assert api.post("/v1/items", json={"items": [made]}).get_json()["created"] == 1
    assert api.post("/v1/items", json={"items": [{"item_id": "SKU-path", "category": "Garden > Tools"}]}
                    ).get_json()["updated"] == 1
    info = api.get("/v1/items/SKU-path").get_json()
    assert info["category"] == "Garden > Tools" and info["categories"] == ["Garden", "Garden > Tools"]
    # A lone surrogate (valid JSON, no store can hold it) and an id over 255 bytes are rejected, not a 500.
    body = '{"items": [{"item_id": "a\\ud800b", "title": "x", "category": "c"}, ' \
           '{"item_id": "' + "\U0001F600" * 64 + '", "title": "x", "category": "c"}]}'
    resp = api.post("/v1/items", data=body, content_type="application/json")
    assert resp.status_code == 200 and resp.get_json()["rejected"] == 2
    events = '{"events": [{"event_id": "s1", "user_id": "u1", "device_id": "d", "type": "search", ' \
             '"query": "a\\udc80", "timestamp": 1700000000}]}'
    resp = api.post("/v1/events", data=events, content_type="application/json")
    assert resp.status_code == 422 and resp.get_json()["results"][0]["field"] == "query"
