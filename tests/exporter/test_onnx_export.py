"""The exported files: self-contained, no debugging baggage, and the signature the device expects."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from pocketrank.exporter.onnx_export import check_signature
from pocketrank.server.home import Home
from pocketrank.shared.errors import ModelError


@pytest.fixture(scope="module")
def model_dir(trained_home):
    home = Home(trained_home)
    return home.model_dir(home.current_model())


@pytest.mark.parametrize("name", ["ranker.fp32.onnx", "ranker.int8.onnx", "encoder.onnx"])
def test_files_are_checked_self_contained_and_carry_no_server_paths(model_dir, name):
    data = (model_dir / name).read_bytes()
    model = onnx.load_from_string(data)
    onnx.checker.check_model(model, full_check=True)
    assert all(t.data_location != TensorProto.EXTERNAL for t in model.graph.initializer)
    assert not any(n.metadata_props for n in model.graph.node)
    assert b"server/training/model.py" not in data and b"stack_trace" not in data
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [18]


def test_ranker_and_encoder_signatures(model_dir):
    ranker = onnx.load(str(model_dir / "ranker.int8.onnx"))
    check_signature(ranker, {"user": [1, 64], "items": ["n", 64]}, {"scores": ["n"]})
    encoder = onnx.load(str(model_dir / "encoder.onnx"))
    check_signature(encoder, {"items": ["L", 64], "weights": ["L"]}, {"user": [1, 64]})


def _graph(items_rows, scores_rows, user_rows=1) -> onnx.ModelProto:
    g = helper.make_graph(
        [helper.make_node("ReduceSum", ["items", "axes"], ["scores"], keepdims=0)], "g",
        [helper.make_tensor_value_info("user", TensorProto.FLOAT, [user_rows, 64]),
         helper.make_tensor_value_info("items", TensorProto.FLOAT, [items_rows, 64])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [scores_rows])],
        [onnx.numpy_helper.from_array(np.array([1], np.int64), "axes")])
    return helper.make_model(g)


def test_the_signature_check_catches_a_misplaced_or_specialised_axis():
    want = ({"user": [1, 64], "items": ["n", 64]}, {"scores": ["n"]})
    check_signature(_graph("candidates", "candidates"), *want)
    with pytest.raises(ModelError, match="items has shape \\[8, 64\\]"):
        check_signature(_graph(8, "candidates"), *want)  # traced size baked in
    with pytest.raises(ModelError, match="scores"):
        check_signature(_graph("candidates", "other"), *want)  # output axis not tied to the input's
    with pytest.raises(ModelError, match="user"):
        check_signature(_graph("candidates", "candidates", user_rows="candidates"), *want)  # axis on the wrong input
