"""The sequence model through the product: train from the store, export with gates, serve, place new products."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from lab.homes import copy_home
from pocketrank.server.config import Config
from pocketrank.server.home import Home

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def seq_home(tmp_path_factory):
    from pocketrank.server.data.datasets import import_movielens
    from pocketrank.server.jobs.train import export_job, train_job

    root = tmp_path_factory.mktemp("seq-home")
    home = Home(root)
    import_movielens(home.store(), "100k", progress=False)
    trained = train_job(home, epochs=2, kind="sequence", progress=False)
    exported = export_job(home, n_users=150)
    return root, trained, exported


def test_train_and_export_write_the_sequence_model(seq_home):
    root, trained, exported = seq_home
    out = root / "models" / trained["model_version"]
    config = json.loads((out / "config.json").read_text())["config"]
    assert config["kind"] == "sequence" and config["n_tokens"] > 0  # MovieLens genres, periods, title words
    for name in ("model.pt", "content.npz", "item_vectors.npz", "encoder.fp32.onnx", "encoder.onnx",
                 "ranker.fp32.onnx", "ranker.int8.onnx"):
        assert (out / name).exists(), name
    t = trained["evaluation"]["test"]["retrieval"]
    assert t["users"] == 943 and 0.0 < t["HR@10"] <= 1.0
    p = exported["parity"]
    assert p["gates"]["int8_ndcg10_kept"]["passed"] and p["fp32_max_abs_diff_vs_torch"] < 1e-4
    assert exported["encoder"]["quantization"]["quantized_matmuls"] >= 4  # attention and feed-forward, int8


def test_server_answers_with_the_encoder_and_events_move_it(seq_home, tmp_path):
    root, trained, _ = seq_home
    home = tmp_path / "home"
    copy_home(root, home)
    from pocketrank.server.api.app import create_app

    app = create_app(Config(home=home))
    api = app.test_client()
    serving = app.extensions["pocketrank"]
    serving.refresh()
    vr = serving.version_ranker(serving.model_version)
    assert vr.encoder is not None
    before = api.get("/v1/recommendations?user_id=1&k=10").get_json()
    assert before["path"] == "personal"
    # Three clicks on the answer's last product's neighbours must change the ranking at once.
    top = [r["item_id"] for r in before["items"]]
    events = [{"event_id": f"t-{k}", "user_id": "1", "device_id": "d", "type": "click", "item_id": top[-1 - k],
               "timestamp": time.time() + k} for k in range(3)]
    assert api.post("/v1/events", json={"events": events}).status_code == 200
    after = api.get("/v1/recommendations?user_id=1&k=10").get_json()
    assert [r["item_id"] for r in after["items"]] != top
    assert not set(r["item_id"] for r in after["items"]) & {e["item_id"] for e in events}  # consumed: left out


def test_a_new_product_gets_its_content_vector(seq_home, tmp_path):
    root, trained, _ = seq_home
    home = tmp_path / "home"
    copy_home(root, home)
    from pocketrank.server.api.app import create_app
    from pocketrank.server.training.content import ContentTower

    app = create_app(Config(home=home))
    api = app.test_client()
    new = {"item_id": "NEW-1", "title": "Space Wars Return", "category": "Sci-Fi", "categories": ["Sci-Fi", "Action"],
           "price": 9.0, "year": 1997}
    r = api.post("/v1/items", json={"items": [new]})
    assert r.status_code == 200 and r.get_json()["results"][0]["provisional"] is True
    serving = app.extensions["pocketrank"]
    index = serving.store.item_index(["NEW-1"])["NEW-1"]
    serving.catalogues.invalidate()
    got = serving.catalogue.vector_map()[index]
    tower = ContentTower.load(home / "models" / trained["model_version"])
    from pocketrank.shared.schemas import validate_item

    want = tower.vector(validate_item(new))
    assert want is not None and np.allclose(got, want, atol=1e-6)
    # The tower is the content map fitted to the trained vectors (identity projection), as metrics say.
    assert np.allclose(tower.projection, np.eye(tower.projection.shape[0]))
    fit = trained["content_map"]
    assert fit["ridge"] > 0 and fit["products"] > 1500 and 0.0 < fit["r2"] < 1.0
    # It is retrievable: a user whose history is Sci-Fi films ranks it above most of the catalogue.
    vecs = serving.catalogue.vectors
    assert np.isfinite(vecs @ got).all()


@pytest.fixture(scope="module")
def ranked_home(tmp_path_factory):
    """A home whose model ships its hard-negative ranker whatever validation says (`ranker: learned`)."""
    from lab.homes import movielens_home

    return movielens_home(tmp_path_factory.mktemp("ranked-home"), 2, settings={"ranker": "learned"}).root


def test_a_learned_ranker_is_gated_signed_and_ranks_the_servers_answer(ranked_home, tmp_path):
    import base64
    import hashlib

    import torch

    from pocketrank.server.api.app import create_app
    from pocketrank.server.training.seqranker import load_ranker
    from pocketrank.shared.wire import parse_manifest

    home = tmp_path / "home"
    copy_home(ranked_home, home)
    app = create_app(Config(home=home))
    api = app.test_client()
    serving = app.extensions["pocketrank"]
    serving.refresh()
    out = Home(home).model_dir(serving.model_version)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["ranker_kind"] == "learned" and metrics["ranker"]["examples"] > 1000
    assert set(metrics["evaluation"]["test"]) == {"retrieval", "ranker"}  # what `train` prints
    export = json.loads((out / "export.json").read_text())
    gates = export["ranker_parity"]["gates"]
    assert export["ranker_kind"] == "learned" and all(g["passed"] for g in gates.values()) and len(gates) == 5
    assert export["quantization"]["method"]["ranker"]["quantized_matmuls"] >= 3  # the device's graph is int8
    manifest = parse_manifest(base64.b64decode(api.get("/v1/sync?users=196").get_json()["manifest"]))
    assert manifest["model"]["ranker_kind"] == "learned"
    assert manifest["artifacts"]["ranker"]["sha256"] == hashlib.sha256((out / "ranker.int8.onnx").read_bytes()).hexdigest()
    # The server scores retrieval's candidates with the learned graph: torch's scores, not sigmoid(<user, item>).
    ranker = load_ranker(out)
    assert ranker is not None
    emb = np.asarray(api.get("/v1/users/196").get_json()["embedding"], dtype=np.float32)
    vr = serving.version_ranker(serving.model_version).ranker
    ctx = serving.store.user_context("196", serving.dim)
    cands = vr.retrieve(emb, ctx.consumed, in_stock_only=True)
    rows = serving.catalogue.rows(cands)
    with torch.no_grad():
        want = ranker(torch.from_numpy(emb).unsqueeze(0), torch.from_numpy(rows)).numpy()
    got = vr.score(emb, cands)
    assert np.allclose(got, want, atol=1e-5)
    assert not np.allclose(got, 1 / (1 + np.exp(-(rows @ emb))), atol=1e-3)  # the correction is not zero
    answer = [serving.catalogue.index_of[i["item_id"]] for i in
              api.get("/v1/recommendations?user_id=196&k=10").get_json()["items"]]
    assert set(answer) <= set(cands.tolist()) and len(answer) == 10
