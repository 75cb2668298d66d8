"""int8 quantization of the ranker, and the proof that it happened.

The method was chosen by measurement on the trained MovieLens model
(`python -m bench edge_model` prints every candidate side by side): dynamic
quantization with signed int8 weights, symmetric, one scale per tensor,
written straight as onnxruntime's fused DynamicQuantizeMatMul. One run at 200
candidates, single thread (median us): fp32 22.6; this 16.3; per-channel
scales 17.8 for no gate that needed them; onnxruntime's `quantize_dynamic`
QInt8 20.1 (the same arithmetic, but the layer-1 bias is the per-request user
half, which onnxruntime will not fuse, so a broadcast Add remains) and QUInt8
25.0; static QDQ calibrated on training users 41.2, because onnxruntime ran
the item matmul in float (its bias is not constant) and the quantized inner
product input cut Kendall tau to 0.984 and top-10 overlap to 0.952.

Weights use 7 of the 8 bits (-63..63, like onnxruntime's `reduce_range`): on x86
CPUs with AVX2 but no VNNI, onnxruntime's u8 x s8 kernel adds pairs of
products in 16 bits with saturation, and full-range weights overflow it
(measured on an AMD EPYC: 4.6% relative error on one matmul, and a retrained
encoder's int8 nDCG@10 fell to 0.95 of fp32, failing its gate; 7-bit weights
are exact there). Phones' ARM kernels do not saturate; the server's parity
gate runs on whatever x86 it is given, so the published model must be exact
on all of them.

Only matrix multiplications with a constant weight of at least
MIN_WEIGHT_ELEMENTS are quantized: the 1 x 128 output row would need the whole
hidden layer quantized per call to save 384 bytes.
"""

from __future__ import annotations

import collections
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from pocketrank.shared.errors import ModelError

QUANTIZED_OPS = {"MatMulInteger", "DynamicQuantizeMatMul", "QLinearMatMul", "MatMulIntegerToFloat", "QGemm"}
FLOAT_MATMULS = {"MatMul", "Gemm"}
MIN_WEIGHT_ELEMENTS = 1024
WEIGHT_QMAX = 63  # 7-bit weights: see the module's docstring (AVX2 saturation)
METHOD: dict[str, Any] = {"method": "dynamic", "weight_type": "QInt8", "per_channel": False, "reduce_range": True,
                          "format": "DynamicQuantizeMatMul"}


def op_counts(path_or_model: Path | onnx.ModelProto) -> dict[str, int]:
    model = path_or_model if isinstance(path_or_model, onnx.ModelProto) else onnx.load(str(path_or_model))
    return dict(collections.Counter(n.op_type for n in model.graph.node))


def runtime_op_counts(path: Path) -> dict[str, int]:
    """Op counts of the graph onnxruntime actually runs, after its own rewrites.

    A file can hold int8 weights and still run in float: onnxruntime turns a
    DequantizeLinear -> MatMul it cannot fuse into a float MatMul without a
    word. Extended level, not all: the latter adds layout rewrites for this
    CPU only.
    """
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        opts.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        return op_counts(Path(opts.optimized_model_filepath))


def int8_matmuls(ops: dict[str, int]) -> int:
    return sum(v for k, v in ops.items() if k in QUANTIZED_OPS)


def check_quantized(path: Path, expected: int) -> dict[str, int]:
    """Raise ModelError unless onnxruntime runs at least `expected` int8 matmuls in `path`."""
    ops = runtime_op_counts(path)
    ran = int8_matmuls(ops)
    if ran < expected:
        raise ModelError(f"{path.name}: onnxruntime runs {ran} int8 matmuls, expected {expected} "
                         f"(runtime ops: {ops}); refusing to publish a model that is not int8")
    return ops


def _constant_weight(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> str | None:
    """The name of the node's constant (K, N) weight operand B, if it has a large one."""
    if node.op_type not in FLOAT_MATMULS or len(node.input) < 2 or node.input[1] not in inits:
        return None
    t = inits[node.input[1]]
    if len(t.dims) != 2 or t.data_type != onnx.TensorProto.FLOAT or int(np.prod(t.dims)) < MIN_WEIGHT_ELEMENTS:
        return None
    return node.input[1]


def unquantized_weights(model: onnx.ModelProto) -> list[str]:
    """Float matmul weights that quantization should have replaced, by node name."""
    inits = {t.name: t for t in model.graph.initializer}
    return [n.name or n.output[0] for n in model.graph.node if _constant_weight(n, inits)]


def quantize_weight(w: np.ndarray, per_channel: bool) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric signed int8 of a (K, N) weight, in 7 bits (WEIGHT_QMAX): scale per tensor or per output column."""
    absmax = np.abs(w).max(axis=0) if per_channel else np.abs(w).max()
    scale = np.where(absmax > 0, absmax / WEIGHT_QMAX, 1.0).astype(np.float32)
    q = np.clip(np.rint(w / scale), -WEIGHT_QMAX, WEIGHT_QMAX).astype(np.int8)
    return q, scale


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _plain(node: onnx.NodeProto) -> bool:
    """A MatMul, or a Gemm that is A @ B (+ C) with B maybe transposed: what the fused op computes."""
    a = _attrs(node)
    return node.op_type == "MatMul" or (a.get("alpha", 1.0) == 1.0 and a.get("beta", 1.0) == 1.0
                                        and not a.get("transA", 0))


def _int8_nodes(node: onnx.NodeProto, w: np.ndarray, per_channel: bool,
                bias_is_row: bool) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """DynamicQuantizeMatMul for `node` with its (K, N) weight `w`, plus an Add if the bias cannot ride along."""
    q, scale = quantize_weight(w, per_channel)
    base = node.name or node.output[0]
    zero = np.zeros(q.shape[1], np.int8) if per_channel else np.int8(0)
    inits = [numpy_helper.from_array(q, f"{base}.wq"), numpy_helper.from_array(scale, f"{base}.wscale"),
             numpy_helper.from_array(zero, f"{base}.wzero")]  # type: ignore[arg-type]  # np.int8 scalar: a 0-d tensor
    inputs = [node.input[0]] + [t.name for t in inits]
    bias = node.input[2] if node.op_type == "Gemm" and len(node.input) > 2 and node.input[2] else None
    if bias is None or bias_is_row:
        return [helper.make_node("DynamicQuantizeMatMul", inputs + ([bias] if bias else []), [node.output[0]],
                                 name=f"{base}.int8", domain="com.microsoft")], inits
    return [helper.make_node("DynamicQuantizeMatMul", inputs, [f"{base}.matmul"], name=f"{base}.int8",
                             domain="com.microsoft"),
            helper.make_node("Add", [f"{base}.matmul", bias], [node.output[0]], name=f"{base}.bias")], inits


def quantize_ranker(fp32_path: Path, int8_path: Path, per_channel: bool = METHOD["per_channel"]) -> dict:
    """Write the int8 ranker; raise ModelError unless every large weight was quantized and runs in int8."""
    model = onnx.shape_inference.infer_shapes(onnx.load(str(fp32_path)))
    inits = {t.name: t for t in model.graph.initializer}
    nodes, replaced = [], 0
    for node in model.graph.node:
        weight = _constant_weight(node, inits)
        if weight is None or not _plain(node):
            nodes.append(node)
            continue
        w = numpy_helper.to_array(inits[weight])
        w = w.T if _attrs(node).get("transB", 0) else w
        # The fused op adds a bias of shape (N,); another shape stays a separate Add.
        bias_is_row = len(node.input) > 2 and _shape(model, node.input[2]) == [w.shape[1]]
        new_nodes, new_inits = _int8_nodes(node, w, per_channel, bias_is_row)
        nodes += new_nodes
        model.graph.initializer.extend(new_inits)
        replaced += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    used = {i for n in model.graph.node for i in n.input}
    keep = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    del model.graph.value_info[:]
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))

    left = unquantized_weights(model)
    ops = op_counts(model)
    if replaced == 0 or left:
        raise ModelError(f"quantization left float weights in {left or 'every matmul'} (ops: {ops}); "
                         "refusing to publish a model that is not int8")
    onnx.checker.check_model(model, full_check=True)
    int8_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(int8_path))
    runtime = check_quantized(int8_path, replaced)
    return {**METHOD, "per_channel": per_channel, "quantized_matmuls": replaced, "op_counts": ops,
            "runtime_op_counts": runtime}


def _shape(model: onnx.ModelProto, name: str) -> list | None:
    for vi in list(model.graph.value_info) + list(model.graph.input):
        if vi.name == name:
            return [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
    for t in model.graph.initializer:
        if t.name == name:
            return list(t.dims)
    return None
