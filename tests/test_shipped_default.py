"""What `pocketrank train` makes by default (the sequence model), end to end through the real API."""

from __future__ import annotations

import base64
import csv

import numpy as np
import pytest
from click.testing import CliRunner

from lab.homes import copy_home
from pocketrank.cli import main as cli
from pocketrank.server.online.encoding import model_kind
from pocketrank.shared.features import user_vector
from pocketrank.shared.wire import parse_manifest
from tests.factories import event_dict

pytestmark = pytest.mark.slow  # trains a model


def test_train_on_a_file_of_your_own_makes_the_sequence_model(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "events.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["user_id", "item_id", "timestamp"])
        for u in range(300):  # four tastes of ten products each: something to learn, enough users to gate on
            for n, item in enumerate(10 * (u % 4) + rng.choice(10, size=8, replace=False)):
                w.writerow([f"u{u}", f"sku-{item}", 1_700_000_000 + 3600 * n + u])
    out = CliRunner().invoke(cli, ["train", "--interactions", str(path), "--out", str(tmp_path / "mine"),
                                   "--epochs", "6", "--no-progress"])
    assert out.exit_code == 0, out.output
    (model,) = (tmp_path / "mine" / "models").iterdir()
    assert model_kind(model) == "sequence" and (model / "encoder.fp32.onnx").exists()


@pytest.fixture
def api(sequence_home, tmp_path):
    from pocketrank.server.api.app import create_app
    from pocketrank.server.config import Config

    home = tmp_path / "home"
    copy_home(sequence_home, home)
    app = create_app(Config(home=home))
    return app.test_client()


def test_the_server_answers_with_the_sequence_model_and_an_event_moves_it_at_once(api):
    body = api.get("/v1/sync?users=196").get_json()
    manifest = parse_manifest(base64.b64decode(body["manifest"]))
    serving = api.application.extensions["pocketrank"]
    trained = serving.home.read_json(serving.home.model_dir(serving.model_version) / "metrics.json")
    # what training decided (the hard-negative ranker against retrieval order, on validation)
    assert manifest["model"]["kind"] == "sequence"
    assert manifest["model"]["ranker_kind"] == trained["ranker_kind"] in ("learned", "retrieval")
    before = api.get("/v1/recommendations?user_id=196&k=10").get_json()
    assert before["path"] == "personal" and len(before["items"]) == 10
    # a click on a product far from the user's taste: the encoder reads it on the next request
    item = before["items"][0]["item_id"]
    resp = api.post("/v1/events", json={"events": [event_dict("seq-1", user="196", item=item, age=1)]})
    assert resp.status_code == 200 and resp.get_json()["results"][0]["status"] == "accepted"
    after = api.get("/v1/recommendations?user_id=196&k=10").get_json()
    assert item not in [i["item_id"] for i in after["items"]]  # consumed, and the ranking moved
    assert [i["item_id"] for i in after["items"]] != [i["item_id"] for i in before["items"]][1:]


def test_the_users_endpoint_shows_the_encoders_vector_the_answer_ranks_with(api):
    serving = api.application.extensions["pocketrank"]
    body = api.get("/v1/users/196").get_json()
    assert body["embedding_from"] == "encoder" and body["model_version"] == serving.model_version
    ctx = serving.store.user_context("196", serving.dim)
    assert not np.allclose(body["embedding"], user_vector(ctx.record.state), atol=1e-3)  # not the fold's
    # The answer's retrieval ranks with this vector: its candidates are the shown embedding's top products.
    ranker = serving.version_ranker(serving.model_version).ranker
    answer = [i["item_id"] for i in api.get("/v1/recommendations?user_id=196&k=10").get_json()["items"]]
    shown = ranker.retrieve(np.asarray(body["embedding"], dtype=np.float32), ctx.consumed)
    assert {serving.catalogue.index_of[i] for i in answer} <= set(shown.tolist())
    # an event moves it in the same request that reads it
    resp = api.post("/v1/events", json={"events": [event_dict("seq-emb", user="196", item="50", age=1)]})
    assert resp.get_json()["results"][0]["status"] == "accepted"
    after = api.get("/v1/users/196").get_json()
    assert after["n_events"] == body["n_events"] + 1
    assert not np.allclose(after["embedding"], body["embedding"], atol=1e-4)
    # A user whose only event names no product: the answers have no personal vector for them.
    resp = api.post("/v1/events", json={"events": [event_dict("seq-q", user="searcher", item=None, etype="search",
                                                              query="space films")]})
    assert resp.get_json()["results"][0]["status"] == "accepted"
    none = api.get("/v1/users/searcher").get_json()
    assert none["embedding_from"] == "none" and none["n_events"] == 1
    assert api.get("/v1/recommendations?user_id=searcher&k=5").get_json()["path"] != "personal"
