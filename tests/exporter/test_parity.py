"""torch, fp32 ONNX and int8 ONNX on held-out MovieLens users: the gates pass the real model, fail others."""

import copy
import json

import numpy as np
import pytest
import torch

from pocketrank.exporter.onnx_export import export_ranker
from pocketrank.exporter.parity import INT8_GATES, HeldOut, check_parity, session
from pocketrank.exporter.quantize import quantize_ranker
from pocketrank.server.home import Home
from pocketrank.server.jobs.train import export_inputs
from pocketrank.server.training import model as model_io
from pocketrank.shared.errors import ModelError
from pocketrank.shared.wire import sha256_hex


@pytest.fixture(scope="module")
def exported(trained_home):
    home = Home(trained_home)
    out = home.model_dir(home.current_model())
    m, _ = model_io.load(out)
    calib, gate, _seqs = export_inputs(m, home.store())
    return m, out, calib, HeldOut(gate.users[:300], gate.candidates[:300], gate.labels[:300])


def test_the_real_model_passes_every_gate(exported):
    m, out, _, gate = exported
    report = check_parity(m.click, out / "ranker.fp32.onnx", out / "ranker.int8.onnx", gate)
    assert report.fp32_max_abs_diff <= 1e-4
    assert report.int8_mean_top10_overlap >= 0.95 and report.int8_mean_kendall_tau >= 0.98
    assert report.int8_auc_drop <= 0.002 and report.int8_ndcg10_drop_rel <= 0.01
    assert set(report.gates) == {"fp32_max_abs_diff", *INT8_GATES} and not report.failed
    assert report.users == 300 and report.candidates == 200


def test_gate_users_are_held_out_from_calibration_and_labelled_with_unseen_events(exported):
    _, _, calib, gate = exported
    assert all(lab.sum() == 1 for lab in gate.labels)  # each query's next event is among its candidates
    assert not any(lab.any() for lab in calib.labels)
    calib_rows = {u.tobytes() for u in calib.users}
    assert not calib_rows & {u.tobytes() for u in gate.users}


def test_the_candidate_axis_is_dynamic_in_both_files(exported):
    _, out, _, gate = exported
    fp32, int8 = session(out / "ranker.fp32.onnx"), session(out / "ranker.int8.onnx")
    user = gate.users[:1].astype(np.float32)
    pool = np.concatenate(gate.candidates[:3]).astype(np.float32)
    for n in (1, 7, 500):
        a = fp32.run(None, {"user": user, "items": pool[:n]})[0]
        b = int8.run(None, {"user": user, "items": pool[:n]})[0]
        assert a.shape == b.shape == (n,)
        assert np.max(np.abs(a - b)) < 0.05


def test_a_model_that_scores_differently_fails_the_fp32_gate(exported):
    m, out, _, gate = exported
    other = model_io.Recommender(m.config)  # untrained: different scores entirely
    with pytest.raises(ModelError, match="fp32_max_abs_diff"):
        check_parity(other.click, out / "ranker.fp32.onnx", out / "ranker.int8.onnx", gate)


def test_an_int8_model_that_drifts_fails_the_int8_gates(exported, tmp_path):
    m, out, _, gate = exported
    drifted = copy.deepcopy(m.click)
    with torch.no_grad():  # the size of error a broken quantizer would make
        w = drifted.item_proj.weight
        w.add_(torch.randn(w.shape, generator=torch.Generator().manual_seed(0)) * w.abs().max() * 0.2)
    export_ranker(drifted, tmp_path / "drift.fp32.onnx", m.config.dim)
    quantize_ranker(tmp_path / "drift.fp32.onnx", tmp_path / "drift.int8.onnx")
    with pytest.raises(ModelError, match="int8_mean_kendall_tau") as err:
        check_parity(m.click, out / "ranker.fp32.onnx", tmp_path / "drift.int8.onnx", gate)
    assert "fp32_max_abs_diff" not in str(err.value)  # the export itself was fine


def test_export_json_and_the_signed_manifest_carry_the_gates_and_the_encoder(trained_home):
    home = Home(trained_home)
    out = home.model_dir(home.current_model())
    export = json.loads((out / "export.json").read_text())
    gates = export["parity"]["gates"]
    assert set(gates) == {"fp32_max_abs_diff", *INT8_GATES} and all(g["passed"] for g in gates.values())
    assert export["bytes"]["int8_onnx"] <= 0.30 * export["bytes"]["fp32_onnx"]
    assert export["encoder"]["parity"]["max_abs_diff_vs_fold"] <= 1e-5

    bundle = home.bundle_dir(1)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["model"]["parity"]["gates"] == gates
    assert manifest["model"]["opset"] == export["opset"] and "dynamo" in manifest["model"]["exporter"]
    encoder = manifest["artifacts"]["encoder"]
    data = (bundle / encoder["file"]).read_bytes()
    assert data == (out / "encoder.onnx").read_bytes()
    assert encoder["sha256"] == sha256_hex(data) and encoder["length"] == len(data)
    assert manifest["model"]["encoder"]["precision"] == "fp32"
