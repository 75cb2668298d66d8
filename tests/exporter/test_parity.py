"""The same user and candidates scored by torch, fp32 ONNX and int8 ONNX agree."""

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from exporter.parity import check_parity
from exporter.quantize import op_counts
from server import model as model_io
from server.data import movielens
from server.evaluate import pooled_user
from server.home import Home
from server.sequences import user_sequences
from shared.errors import ModelError


@pytest.fixture(scope="module")
def exported(trained_home):
    home = Home(trained_home)
    out = home.model_dir(home.current_model())
    m, _ = model_io.load(out)
    return m, out


def test_torch_fp32_and_int8_agree_on_real_users(exported):
    m, out = exported
    ml = movielens.load()
    seqs = user_sequences(ml.users, ml.items, ml.n_users)
    vecs = m.item_vectors().detach().numpy()
    fp32 = ort.InferenceSession(str(out / "ranker.fp32.onnx"), providers=["CPUExecutionProvider"])
    int8 = ort.InferenceSession(str(out / "ranker.int8.onnx"), providers=["CPUExecutionProvider"])
    overlaps = []
    for u in range(0, 943, 19):  # 50 users spread over the data set
        uv = pooled_user(vecs, seqs[u], m.config.history)[None].astype(np.float32)
        cand = vecs[np.argsort(-(vecs @ uv[0]))[:200]]
        with torch.no_grad():
            ref = m.click(torch.from_numpy(uv), torch.from_numpy(cand)).numpy()
        a = fp32.run(None, {"user": uv, "items": cand})[0]
        b = int8.run(None, {"user": uv, "items": cand})[0]
        np.testing.assert_allclose(a, ref, atol=1e-4)
        overlaps.append(len(set(np.argsort(-a)[:10]) & set(np.argsort(-b)[:10])) / 10)
    assert np.mean(overlaps) >= 0.9


def test_the_candidate_axis_is_dynamic(exported):
    m, out = exported
    sess = ort.InferenceSession(str(out / "ranker.fp32.onnx"), providers=["CPUExecutionProvider"])
    for n in (1, 7, 500):
        items = np.random.default_rng(n).normal(size=(n, 64)).astype(np.float32)
        assert sess.run(None, {"user": items[:1], "items": items})[0].shape == (n,)


def test_quantized_operators_were_inserted(exported):
    _, out = exported
    ops = op_counts(out / "ranker.int8.onnx")
    assert ops.get("MatMulInteger", 0) >= 2 and "MatMul" not in ops
    report = json.loads((out / "export.json").read_text())
    assert report["parity"]["fp32_max_abs_diff"] <= 1e-4
    assert report["bytes"]["int8_onnx"] < report["bytes"]["fp32_onnx"] / 2


def test_the_gate_fails_a_model_that_ranks_differently(exported, tmp_path):
    m, out = exported
    other = model_io.Recommender(m.config)  # untrained: different scores entirely
    users = np.random.default_rng(0).normal(size=(5, 64)).astype(np.float32)
    cands = [np.random.default_rng(i).normal(size=(50, 64)).astype(np.float32) for i in range(5)]
    with pytest.raises(ModelError, match="fp32 ONNX differs from torch"):
        check_parity(other.click, out / "ranker.fp32.onnx", out / "ranker.int8.onnx", users, cands)
