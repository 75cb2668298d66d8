"""EdgeClient against the real Flask app in-process (httpx's WSGI transport)."""

import base64

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edge_runtime import EdgeClient, IntegrityError, SignatureError, TransportError, ValidationError
from edge_runtime.outbox import Outbox
from edge_runtime.rerank import LocalRanker
from server.publish import publish_job
from server.home import Home
from shared.errors import ModelError
from shared.features import user_vector

USER = "196"


def test_sync_then_offline_recommend_reranks_on_the_device(device):
    result = device.sync([USER])
    assert result.changed and result.version == 1
    assert set(result.artifacts_fetched) == {"items", "catalog", "users", "ranker"}
    assert device.sync([USER]).changed is False  # 304: nothing new
    rec = device.recommend(USER, 10, allow_server=False)
    assert rec.source == "edge" and len(rec.items) == 10 and rec.candidates_version == 1
    assert all(it.title for it in rec.items)
    scores = [it.score for it in rec.items]
    assert scores == sorted(scores, reverse=True)


def test_server_answers_when_reachable(device):
    device.sync([USER])
    rec = device.recommend(USER, 5)
    assert rec.source == "server" and len(rec.items) == 5 and rec.model_version


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
    for etype, item in (("view", 1), ("click", 50), ("search", None), ("purchase", 181)):
        if etype == "search":
            device.track(USER, "search", query="star wars")
        else:
            device.track(USER, etype, item)
    on_device = device.cache.user_state(USER, 64)
    assert device.flush().acknowledged == 4
    on_server = app.extensions["pocketrank"].store.user_state(USER, 64)
    assert on_device.n_events == on_server.n_events
    np.testing.assert_allclose(user_vector(on_device), user_vector(on_server), atol=1e-5)


class FlakyTransport:
    """Wraps the real transport and misbehaves on purpose, once."""

    def __init__(self, inner, mode):
        self.inner, self.mode, self.calls = inner, mode, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def get_json(self, url, timeout, params=None, headers=None):
        status, body = self.inner.get_json(url, timeout, params, headers)
        if self.mode == "tamper" and url == "/v1/sync" and body:
            manifest = base64.b64decode(body["manifest"]).replace(b'"version":', b'"version": ')
            body["manifest"] = base64.b64encode(manifest).decode()
        return status, body

    def get_bytes(self, url, timeout, start=0):
        self.calls.append((url, start))
        data, ranged = self.inner.get_bytes(url, timeout, start)
        if self.mode == "truncate" and "items" in url and start == 0:
            return data[: len(data) // 2], ranged
        if self.mode == "corrupt" and "users" in url:
            return data[:-1] + bytes([data[-1] ^ 1]), ranged
        return data, ranged

    def post_json(self, url, body, timeout):
        answer = self.inner.post_json(url, body, timeout)
        if self.mode == "lose_ack":
            self.mode = None
            raise TransportError("connection reset before the answer arrived")
        return answer


def _swap(device, mode):
    flaky = FlakyTransport(device.transport, mode)
    device.transport = flaky
    return flaky


@pytest.mark.parametrize("mode, error", [("tamper", SignatureError), ("corrupt", IntegrityError)])
def test_a_bad_sync_leaves_the_device_on_its_previous_version(device, home, mode, error):
    device.sync([USER])
    before = device.recommend(USER, 10, allow_server=False).item_ids
    device.track(USER, "click", 1)
    device.flush()  # the user's state changes, so v2's user index differs from v1's
    publish_job(Home(home), progress=False)
    before = device.recommend(USER, 10, allow_server=False).item_ids
    _swap(device, mode)
    with pytest.raises(error):
        device.sync([USER])
    assert device.cache.version == 1
    assert device.recommend(USER, 10, allow_server=False).item_ids == before


def test_an_interrupted_download_resumes_with_a_range_request(device):
    flaky = _swap(device, "truncate")
    with pytest.raises(TransportError, match="resume"):
        device.sync([USER])
    assert device.cache.version == 0
    assert device.sync([USER]).version == 1
    starts = [s for url, s in flaky.calls if "items" in url]
    assert starts[0] == 0 and starts[-1] > 0


def test_a_lost_acknowledgement_never_counts_an_event_twice(device, app):
    device.sync([USER])
    ids = [device.track(USER, "click", item) for item in (1, 2, 3)]
    _swap(device, "lose_ack")
    first = device.flush()
    assert first.error and first.remaining == 3  # the server stored them; the device does not know
    second = device.flush()
    assert second.acknowledged == 3 and second.remaining == 0
    assert app.extensions["pocketrank"].store.count_events(ids) == 3


def test_rejected_events_are_kept_aside_with_the_reason(device):
    device.sync([USER])
    device.track(USER, "click", 1)
    # An event the server will refuse (an item id the schema rejects once on the wire).
    device.cache.db.execute("UPDATE outbox SET body = replace(body, '\"item_id\": 1', '\"item_id\": -1')")
    device.cache.db.conn.commit()
    result = device.flush()
    assert result.rejected == 1 and result.remaining == 0
    reason = device.cache.db.execute("SELECT reason FROM rejected").fetchone()[0]
    assert reason.startswith("item_id:")


def test_the_outbox_drops_views_before_purchases(tmp_path, public_key):
    client = EdgeClient(tmp_path / "d.sqlite", public_key, base_url="http://127.0.0.1:9")
    client.outbox = Outbox(client.cache, max_events=4)
    for i in range(3):
        client.track("u", "purchase", 100 + i)
    for i in range(3):
        client.track("u", "view", 200 + i)
    kinds = [e["type"] for e in client.outbox.batch(10)]
    assert kinds.count("purchase") == 3 and kinds.count("view") == 1
    assert client.status()["dropped"] == {"view": 2}
    for i in range(3):
        client.track("u", "purchase", 300 + i)
    assert [e["type"] for e in client.outbox.batch(10)].count("purchase") == 6  # never dropped silently


def test_offline_before_any_sync_is_an_empty_answer_not_a_crash(tmp_path, public_key):
    client = EdgeClient(tmp_path / "d.sqlite", public_key, base_url="http://127.0.0.1:9", latency_budget=0.05)
    rec = client.recommend("u", 5)
    assert rec.source == "popular" and rec.items == [] and "failed" in rec.reason
    assert client.recommend("u", 5).reason.startswith("server in backoff")
    with pytest.raises(ValidationError):
        client.recommend("u", 0)


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
