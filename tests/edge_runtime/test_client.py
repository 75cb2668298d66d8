"""EdgeClient against the real Flask app in-process (httpx's WSGI transport)."""

import base64
import socket
import threading
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from pocketrank.edge_runtime import EdgeClient, IntegrityError, SignatureError, TransportError, ValidationError
from pocketrank.edge_runtime.rerank import LocalRanker
from pocketrank.server.bundle.publish import publish_job
from pocketrank.server.home import Home
from pocketrank.shared.errors import ModelError
from pocketrank.shared.features import user_vector
from pocketrank.shared.rules import demote_popular, top_by_score

from .queued import reseal

USER = "196"


def test_sync_then_offline_recommend_reranks_on_the_device(device):
    result = device.sync([USER])
    assert result.changed and result.version == 1 and result.users_updated == [USER]
    assert {"ranker"} <= set(result.artifacts_fetched)  # and any others (encoder)
    # Item entries for the user's candidates and the popular list only, not the catalogue.
    manifest = device.cache.manifest()
    assert 200 <= len(result.items_received) < manifest["items"]["count"]
    assert set(manifest["popular"]) <= set(result.items_received)
    assert device.sync([USER]).changed is False  # 304: nothing new
    rec = device.recommend(USER, 10, allow_server=False)
    assert rec.source == "edge" and len(rec.items) == 10 and rec.candidates_version == 1
    assert rec.model_version and not rec.stale and rec.reason == "server not asked"
    assert all(it.title and it.source == "edge" for it in rec.items)
    # Products by their own ids (MovieLens's are "1".."1682"), each the external id of a held signed entry.
    held = device.cache.products(rec.item_ids)
    assert all(isinstance(i, str) for i in rec.item_ids) and set(rec.item_ids) <= set(held)
    assert [it.rank for it in rec.items] == list(range(1, 11))
    scores = [it.score for it in rec.items]
    assert scores == sorted(scores, reverse=True)


def test_the_local_order_is_shared_top_by_score_over_the_int8_ranker(device):
    device.sync([USER])
    rec = device.recommend(USER, 20, allow_server=False)
    cands = device.cache.packed(USER)
    ranker = LocalRanker(device.cache.artifact("ranker")[1])
    scores = ranker.score(user_vector(device.cache.user_state(USER)), cands.vectors)
    ranked = top_by_score(cands.ids, scores)[:20]  # over the indexes the records carry
    names = device.cache.item_meta([i for i, _ in ranked])
    expected = [(names[i]["external_id"], s) for i, s in ranked]
    assert [(it.item_id, pytest.approx(it.score, abs=1e-6)) for it in rec.items] == expected


def test_the_servers_category_cap_travels_in_the_signed_manifest_and_binds_offline_answers(device, home, tmp_path):
    from pocketrank.server.config import Config

    device.sync([USER])
    assert "rules" not in device.cache.manifest()  # no cap set: none published
    uncapped = device.recommend(USER, 20, allow_server=False)
    cats = [it.category for it in uncapped.items]
    assert len(cats) > len(set(cats))  # this user's list repeats a category when nothing caps it
    publish_job(Home(home, Config(home=home, max_per_category=2)), progress=False)
    assert device.sync([USER]).version == 2
    assert device.cache.manifest()["rules"] == {"max_per_category": 2}
    capped = device.recommend(USER, 20, allow_server=False)
    counts = {}
    for it in capped.items:  # every item, the popular ones filling up included
        counts[it.category] = counts.get(it.category, 0) + 1
    assert max(counts.values()) == 2 and capped.items[0].source == "edge"
    # The request's cap, then the app's, win over the manifest's.
    assert device.recommend(USER, 20, context={"max_per_category": 5}, allow_server=False).item_ids != capped.item_ids
    key = (home / "keys" / "signing.pub").read_text().strip()
    own = EdgeClient(tmp_path / "device.sqlite", key, transport=device.transport, device_id="test-phone",
                     max_per_category=5)  # the same phone's database, the app's own cap
    try:
        mine = own.recommend(USER, 20, allow_server=False)
    finally:
        own.close()
    assert mine.item_ids != capped.item_ids and max(
        sum(1 for it in mine.items if it.category == c) for c in {it.category for it in mine.items}) > 2


def test_the_servers_popularity_knob_travels_in_the_signed_manifest_and_tilts_offline_answers(device, home):
    from pocketrank.server.config import Config

    device.sync([USER])
    plain = device.recommend(USER, 100, allow_server=False)
    popular = set(device.cache.popular())
    index = device.cache.indexes(plain.item_ids)
    rest = [e for e in plain.item_ids if index[e] not in popular]
    assert 0 < len(rest) < len(plain.item_ids)  # this user's offline list holds products of the signed popular list
    publish_job(Home(home, Config(home=home, popular_penalty=5000.0)), progress=False)
    assert device.sync([USER]).version == 2
    assert device.cache.manifest()["rules"] == {"popular_penalty": 5000.0}
    tilted = device.recommend(USER, 100, allow_server=False)
    # Every popular product falls below every other candidate (its odds / e^50 at least), which keep their order.
    assert tilted.source == "edge" and tilted.item_ids[:len(rest)] == rest
    # The request's strength wins over the manifest's; 0 turns the knob off.
    assert device.recommend(USER, 100, context={"popular_penalty": 0}, allow_server=False).item_ids == plain.item_ids
    for bad in (-1.0, float("nan"), "strong", True, 10**400):
        with pytest.raises(ValidationError):
            device.recommend(USER, 10, context={"popular_penalty": bad}, allow_server=False)


def test_a_mid_strength_tilt_is_the_shared_function_over_the_rankers_scores_on_both_device_paths(device, monkeypatch):
    device.sync([USER])
    popular = device.cache.popular()
    cands = device.cache.packed(USER)
    ranker = LocalRanker(device.cache.artifact("ranker")[1])
    scores = ranker.score(user_vector(device.cache.user_state(USER)), cands.vectors)
    expected = top_by_score(cands.ids, demote_popular(cands.ids.tolist(), scores.tolist(), popular, 1.0))[:100]
    rec = device.recommend(USER, 100, context={"popular_penalty": 1.0}, allow_server=False)
    names = device.cache.item_meta([i for i, _ in expected])
    assert rec.source == "edge"
    assert [(it.item_id, pytest.approx(it.score, abs=1e-6)) for it in rec.items] == [
        (names[i]["external_id"], s) for i, s in expected]
    plain = device.recommend(USER, 100, allow_server=False).item_ids
    assert rec.item_ids != plain  # strength 1 reorders, without emptying the head from the list
    assert any(device.cache.indexes([e])[e] in set(popular) for e in rec.item_ids)
    # Without a usable state: the record's f16 scores in the server's order, tilted by the same function, equal
    # scores keeping the server's order.
    monkeypatch.setattr(device.local, "user_vector", lambda snap, user: None)
    cached = device.recommend(USER, 100, context={"popular_penalty": 1.0}, allow_server=False)
    tilted = demote_popular(cands.ids.tolist(), cands.scores.tolist(), popular, 1.0)
    order = sorted(range(len(tilted)), key=lambda n: -tilted[n])  # stable: the record's order among ties
    names = device.cache.item_meta(cands.ids.tolist())
    assert cached.source == "cache"
    assert cached.item_ids == [names[int(cands.ids[n])]["external_id"] for n in order][:100]


@pytest.mark.parametrize("rules", [[1], "x", {"popular_penalty": 10**400}, {"popular_penalty": "high"},
                                   {"popular_penalty": True, "max_per_category": "two"},
                                   {"max_per_category": 0, "popular_penalty": float("nan")}])
def test_a_malformed_manifest_rule_is_read_as_off_not_raised(device, monkeypatch, rules):
    import dataclasses

    device.sync([USER])
    plain = device.recommend(USER, 20, allow_server=False)
    snap = dataclasses.replace(device.cache.snapshot(), manifest={**device.cache.manifest(), "rules": rules})
    monkeypatch.setattr(device.cache, "snapshot", lambda: snap)
    assert device.recommend(USER, 20, allow_server=False).item_ids == plain.item_ids


def test_server_answers_when_reachable(device):
    device.sync([USER])
    rec = device.recommend(USER, 5)
    assert rec.source == "server" and len(rec.items) == 5 and rec.model_version
    assert all(it.title and it.source == "server" for it in rec.items)


def test_context_excludes_items_and_caps_categories(device):
    device.sync([USER])
    base = device.recommend(USER, 10, allow_server=False)
    shown = base.item_ids[:2]
    rec = device.recommend(USER, 10, context={"exclude": shown}, allow_server=False)
    assert not set(shown) & set(rec.item_ids) and len(rec.items) == 10
    capped = device.recommend(USER, 20, context={"max_per_category": 1}, allow_server=False)
    cats = [it.category for it in capped.items]
    assert len(cats) == len(set(cats))  # one per category, the popular items filling up under the same cap
    assert 10 <= len(capped.items) < 20  # MovieLens has fewer than 20 first genres: the cap wins over the length
    online = device.recommend(USER, 5, context={"exclude": shown})
    assert online.source == "server" and not set(shown) & set(online.item_ids)
    assert not set(shown) & set(device.recommend(USER, 10, context={"exclude": [int(i) for i in shown if i.isdigit()]
                                                                     + ["not a product"]},
                                                    allow_server=False).item_ids)  # integers are their digits
    for bad in ({"nope": 1}, {"exclude": [" x"]}, {"exclude": [1.5]}, {"exclude": "x"}, {"max_per_category": 0}, "x"):
        with pytest.raises(ValidationError, match="context"):
            device.recommend(USER, 5, context=bad, allow_server=False)


def test_a_click_on_the_device_changes_the_local_ranking(device):
    device.sync([USER])
    before = device.recommend(USER, 10, allow_server=False)
    clicked = before.items[3].item_id
    device.track(USER, "click", clicked)
    after = device.recommend(USER, 10, allow_server=False)
    assert clicked not in after.item_ids
    assert [it.score for it in after.items] != [it.score for it in before.items if it.item_id != clicked][:10]


def test_device_and_server_fold_the_same_events_to_the_same_vector(device, app):
    device.sync([USER])
    rng = np.random.default_rng(7)
    # Products by their own ids: the held entries' of the user's candidates, and some the device may not hold.
    items = [m["external_id"] for m in device.cache.item_meta(device.cache.packed(USER).ids.tolist()).values()]
    events = [("view", "1"), ("click", "50"), ("search", "star wars"), ("purchase", 181), ("impression", "7")]
    events += [(str(t), str(rng.choice(items))) for t in rng.choice(["view", "click", "add_to_cart"], 30)]
    for etype, what in events:
        if etype == "search":
            device.track(USER, "search", query=what)
        else:
            device.track(USER, etype, what)
    on_device = device.cache.user_state(USER)
    assert device.flush().acknowledged == len(events)
    on_server = app.extensions["pocketrank"].store.user_state(USER, 64)
    assert on_device.n_events == on_server.n_events
    # The device folds with the f16 vectors of its item entries, the server with f32: within f16's rounding
    # (~5e-4 relative per value; measured 4e-5 absolute here), and the next sync replaces the device's state.
    np.testing.assert_allclose(user_vector(on_device), user_vector(on_server), atol=2e-4)
    # After the next publish the device starts from the server's state, and agrees again.
    publish_job(Home(app.config["POCKETRANK"].home), progress=False)
    device.sync([USER])
    np.testing.assert_allclose(user_vector(device.cache.user_state(USER)), user_vector(on_server), atol=1e-5)


def test_a_user_added_later_gets_records_of_the_held_version(device):
    device.sync([USER])
    result = device.sync([USER, "186", "no-such-user"])
    assert result.version == 1 and result.users_updated == ["186"] and result.unknown_users == ["no-such-user"]
    assert device.recommend("186", 5, allow_server=False).source == "edge"
    assert device.sync([USER, "186", "no-such-user"]).changed is False  # nothing asked again


class ByteTamperingTransport:
    """A man in the middle: the real transport underneath, bytes changed on the way."""

    def __init__(self, inner, mode):
        self.inner, self.mode = inner, mode

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def get_json(self, url, timeout, params=None, headers=None, limit=None):
        status, body = self.inner.get_json(url, timeout, params, headers, limit)
        if self.mode == "tamper" and url == "/v1/sync" and body:
            manifest = base64.b64decode(body["manifest"]).replace(b'"version":', b'"version": ')
            body["manifest"] = base64.b64encode(manifest).decode()
        if self.mode == "corrupt" and url == "/v1/sync" and body:
            for entry in body["records"].values():  # one flipped bit in each record's frame (full or delta)
                data = bytearray(base64.b64decode(entry["data"]))
                data[len(data) // 2] ^= 0x04
                entry["data"] = base64.b64encode(bytes(data)).decode()
        return status, body


@pytest.mark.parametrize("mode, error", [("tamper", SignatureError), ("corrupt", IntegrityError)])
def test_a_bad_sync_leaves_the_device_on_its_previous_version(device, home, mode, error):
    device.sync([USER])
    device.track(USER, "click", 1)
    device.flush()  # the user's state changes, so v2's user index differs from v1's
    publish_job(Home(home), progress=False)
    before = device.recommend(USER, 10, allow_server=False).item_ids
    device.transport = ByteTamperingTransport(device.transport, mode)
    with pytest.raises(error):
        device.sync([USER])
    assert device.cache.version == 1
    assert device.recommend(USER, 10, allow_server=False).item_ids == before


def test_a_new_bundle_swaps_the_model_file_and_removes_the_old_one(device, home):
    device.sync([USER])
    old = device.cache.artifact_shas()["ranker"]
    h = Home(home)
    model_dir = h.model_dir(h.current_model())
    (model_dir / "ranker.int8.onnx").write_bytes((model_dir / "ranker.fp32.onnx").read_bytes())
    publish_job(h, progress=False)
    fetched = device.sync([USER]).artifacts_fetched
    assert "ranker" in fetched and "encoder" not in fetched  # unchanged: not downloaded again
    new = device.cache.artifact_shas()["ranker"]
    assert new != old and device.slot.sha == new
    assert device.cache.files.has(new) and not device.cache.files.has(old)
    assert not [p for p in device.cache.files.dir.iterdir() if ".tmp" in p.name]
    assert device.recommend(USER, 5, allow_server=False).source == "edge"


def test_a_damaged_model_file_falls_back_to_the_cached_order(device):
    device.sync([USER])
    sha = device.cache.artifact_shas()["ranker"]
    path = device.cache.files.path(sha)
    path.write_bytes(path.read_bytes()[:-10])
    fresh = EdgeClient(device.cache.path, None, base_url="http://127.0.0.1:9")
    rec = fresh.recommend(USER, 10, allow_server=False)
    assert rec.source == "cache" and len(rec.items) == 10
    assert "damaged" in fresh.status()["ranker"]["error"]
    fresh.close()


def test_rejected_events_are_kept_aside_with_the_reason(device):
    device.sync([USER])
    device.track(USER, "click", "1")
    # An event the server will refuse (an item id the schema rejects once on the wire).
    device.cache.conn.execute("UPDATE outbox SET body = replace(body, '\"item_id\":\"1\"', '\"item_id\":-1')")
    reseal(device)
    result = device.flush()
    assert result.rejected == 1 and result.remaining == 0
    reason = device.cache.conn.execute("SELECT reason FROM rejected").fetchone()[0]
    assert reason.startswith("item_id:")
    assert device.status()["rejected"] == 1


def test_offline_before_any_sync_is_an_empty_answer_not_a_crash(tmp_path, public_key):
    client = EdgeClient(tmp_path / "d.sqlite", public_key, base_url="http://127.0.0.1:9", latency_budget=0.05)
    rec = client.recommend("u", 5)
    assert rec.source == "popular" and rec.items == [] and "failed" in rec.reason
    assert client.recommend("u", 5).reason.startswith("server in backoff")
    with pytest.raises(ValidationError):
        client.recommend("u", 0)
    with pytest.raises(ValidationError, match="user_id"):
        client.recommend("not a valid id", 5)
    with pytest.raises(TransportError):
        client.sync(["u"])
    client.close()


def test_every_popular_item_fills_a_list_the_rules_emptied(device):
    device.sync([USER])
    names = device.cache.item_meta(device.cache.packed(USER).ids[:195].tolist())
    for item in device.cache.packed(USER).ids[:195].tolist():
        device.track(USER, "click", names[item]["external_id"])
    rec = device.recommend(USER, 10, allow_server=False)
    assert rec.source == "edge" and len(rec.items) == 10
    assert [it.source for it in rec.items].count("popular") >= 5


def test_stale_candidates_are_still_shown_but_marked(tmp_path, app, home, public_key):
    import httpx

    from pocketrank.edge_runtime.transport import Transport

    now = [time.time()]
    transport = Transport(client=httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://test"))
    client = EdgeClient(tmp_path / "d.sqlite", public_key, transport=transport, stale_after=86400,
                        clock=lambda: now[0])
    client.sync([USER])
    assert not client.recommend(USER, 5, allow_server=False).stale
    now[0] += 2 * 86400
    rec = client.recommend(USER, 5, allow_server=False)
    assert rec.stale and all(it.stale for it in rec.items) and len(rec.items) == 5
    client.close()


class ConnectionCounter:
    """A loopback listener that counts connection attempts and answers none."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()


def test_no_network_call_the_caller_did_not_ask_for(device, tmp_path, public_key):
    device.sync([USER])
    counter = ConnectionCounter()
    client = EdgeClient(device.cache.path, public_key, base_url=f"http://127.0.0.1:{counter.port}")
    client.track(USER, "click", 1)
    client.recommend(USER, 5, allow_server=False)
    client.status()
    assert counter.accepted == 0
    client.flush()
    assert counter.accepted >= 1
    client.close()
    counter.sock.close()


def _tiny_model(input_name="user", size=0):
    nodes = [helper.make_node("Identity", ["pad" if size else input_name], ["scores"])]
    inputs = [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [None])]
    if input_name == "user":
        inputs.append(helper.make_tensor_value_info("items", TensorProto.FLOAT, [None, 64]))
    init = [helper.make_tensor("pad", TensorProto.FLOAT, [size],
                                                np.zeros(size, dtype=np.float32).tobytes(), raw=True)] if size else []
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None])],
                              initializer=init)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_the_device_refuses_bad_models(tmp_path):
    with pytest.raises(ModelError, match="signature"):
        LocalRanker(_tiny_model("x").SerializeToString())
    with pytest.raises(ModelError, match="above the configured bound"):
        LocalRanker(_tiny_model(size=1000).SerializeToString(), max_bytes=1000)
    with pytest.raises(ModelError, match="could not be loaded"):
        LocalRanker(b"not a model")
    external = _tiny_model(size=16)
    onnx.save_model(external, str(tmp_path / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="m.data", size_threshold=0)
    with pytest.raises(ModelError, match="external data"):
        LocalRanker((tmp_path / "m.onnx").read_bytes())


def test_events_on_recommended_items_say_which_path_served_them(device, app):
    device.sync([USER])
    rec = device.recommend(USER, 5, allow_server=False)
    device.track(USER, "click", rec.items[0].item_id)
    device.track(USER, "view", "not shown (1999)")  # not shown: no context
    device.track(USER, "click", rec.items[1].item_id, context={"platform": "android"})  # explicit wins
    bodies = [e.get("context") for e in device.outbox.batch(10)]
    assert bodies[0]["source"] == "edge" and bodies[0]["connectivity"] == "offline"
    assert bodies[0]["model_version"] == rec.model_version
    assert bodies[1] is None and bodies[2] == {"platform": "android"}


def test_a_record_that_did_not_change_is_not_sent_again(device, home, app):
    first = device.sync(["196", "186"])
    assert sorted(first.users_updated) == ["186", "196"]
    device.track("186", "click", 1)
    device.flush()  # 186's state moves, so only 186's list changes in the next bundle
    publish_job(Home(home), progress=False)
    second = device.sync(["196", "186"])
    assert second.version == 2 and second.users_updated == ["186"] and second.users_unchanged == ["196"]
    rec = device.recommend("196", 10, allow_server=False)
    assert rec.source == "edge" and rec.candidates_version == 2 and len(rec.items) == 10


def test_a_wrong_unchanged_claim_costs_a_request_not_a_wrong_list(device, home):
    device.sync(["196"])
    # The held record is damaged on the device; the server's "unchanged" must not carry it forward.
    with device.cache.tx() as conn:
        conn.execute("UPDATE candidates SET blob = ? WHERE user_id = '196'", (b"damaged",))
    publish_job(Home(home), progress=False)
    result = device.sync(["196"])
    assert result.version == 2 and "196" in result.users_updated


def test_server_ranked_items_the_device_holds_no_entry_for_keep_their_titles(device):
    device.sync([USER])  # the device holds entries for 196's candidates and the popular list only
    rec = device.recommend("186", 10)
    held = set(device.cache.products(rec.item_ids))
    assert rec.source == "server" and len(rec.items) == 10 and set(rec.item_ids) - held
    assert all(isinstance(i, str) for i in rec.item_ids)  # the server's answer names products by their own ids
    assert all(it.title and it.category and it.price is not None for it in rec.items)
