"""int8 quantization: the arithmetic, and the proof that onnxruntime really runs int8."""

import numpy as np
import onnx
import pytest

from pocketrank.exporter.quantize import (
    WEIGHT_QMAX,
    check_quantized,
    op_counts,
    quantize_ranker,
    quantize_weight,
    runtime_op_counts,
    unquantized_weights,
)
from pocketrank.server.home import Home
from pocketrank.shared.errors import ModelError


@pytest.fixture(scope="module")
def model_dir(trained_home):
    home = Home(trained_home)
    return home.model_dir(home.current_model())


def test_symmetric_int8_weights_round_to_within_half_a_step():
    w = np.random.default_rng(0).normal(size=(64, 128)).astype(np.float32)
    for per_channel in (False, True):
        q, scale = quantize_weight(w, per_channel)
        assert q.dtype == np.int8 and np.abs(q).max() == WEIGHT_QMAX == 63
        assert scale.shape == ((128,) if per_channel else ())
        assert np.all(np.abs(q * scale - w) <= scale / 2 + 1e-7)
    q, scale = quantize_weight(np.zeros((4, 4), np.float32), False)  # no division by zero
    assert scale == 1.0 and not q.any()


def test_the_fused_int8_matmul_is_exact_where_full_range_weights_would_saturate():
    """onnxruntime's x86 AVX2 kernel (no VNNI) sums u8 x s8 pairs in 16 bits with saturation: activations at
    the top of their range against 8-bit weights overflow it, 7-bit ones cannot. The fused op must equal the
    exact integer arithmetic on any CPU this runs on."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.normal(size=(64, 64)).astype(np.float32)
    w[:, :8] *= 5  # a few large weights: the rest sit near the extremes of the scale too
    q, scale = quantize_weight(w, False)
    inits = [numpy_helper.from_array(q, "wq"), numpy_helper.from_array(np.asarray(scale, np.float32), "ws"),
             numpy_helper.from_array(np.array(0, np.int8), "wz")]
    node = helper.make_node("DynamicQuantizeMatMul", ["x", "wq", "ws", "wz"], ["y"], domain="com.microsoft")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 64])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.abs(rng.normal(size=(256, 64))).astype(np.float32) * 3
    x[:, ::2] = x.max()  # half the inputs quantize to 255
    got = session.run(None, {"x": x})[0]
    step = x.max() / 255.0  # all inputs >= 0: zero point 0
    exact = (np.clip(np.rint(x / step), 0, 255) @ q.astype(np.float64)) * step * float(scale)
    assert np.abs(got - exact).max() <= 1e-5 * np.abs(exact).max()


def test_the_shipped_int8_ranker_runs_both_weight_matmuls_in_int8(model_dir):
    path = model_dir / "ranker.int8.onnx"
    ops = op_counts(path)
    assert ops.get("DynamicQuantizeMatMul") == 2 and unquantized_weights(onnx.load(str(path))) == []
    runtime = runtime_op_counts(path)
    assert runtime.get("DynamicQuantizeMatMul") == 2
    # the per-request user half is the fused op's bias, not a separate broadcast Add
    assert "Add" not in runtime and "MatMul" not in runtime
    init = {t.name: t for t in onnx.load(str(path)).graph.initializer}
    assert sum(t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 2 for t in init.values()) == 2
    assert path.stat().st_size <= 0.30 * (model_dir / "ranker.fp32.onnx").stat().st_size


def test_a_float_model_is_refused_as_int8(model_dir):
    with pytest.raises(ModelError, match="runs 0 int8 matmuls"):
        check_quantized(model_dir / "ranker.fp32.onnx", expected=2)
    assert len(unquantized_weights(onnx.load(str(model_dir / "ranker.fp32.onnx")))) == 2


def test_per_channel_scales_are_one_per_output_column(model_dir, tmp_path):
    info = quantize_ranker(model_dir / "ranker.fp32.onnx", tmp_path / "pc.onnx", per_channel=True)
    assert info["per_channel"] and info["quantized_matmuls"] == 2
    scales = [t for t in onnx.load(str(tmp_path / "pc.onnx")).graph.initializer if t.name.endswith(".wscale")]
    assert sorted(list(t.dims) for t in scales) == [[128], [128]]
