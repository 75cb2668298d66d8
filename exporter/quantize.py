"""int8 quantization of the ranker.

Dynamic quantization with signed int8 weights: measured in issue 5's brief on
onnxruntime 1.32 it was faster than fp32 and closer to it than static QDQ for a
click model of this shape. We check that quantized operators were inserted,
because onnxruntime silently skips nodes it cannot quantize.
"""

from __future__ import annotations

import collections
from pathlib import Path

import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic

from shared.errors import ModelError

QUANTIZED_OPS = {"MatMulInteger", "DynamicQuantizeLinear", "DynamicQuantizeMatMul", "QLinearMatMul",
                 "MatMulIntegerToFloat"}


def op_counts(path: Path) -> dict[str, int]:
    return dict(collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node))


def quantize_ranker(fp32_path: Path, int8_path: Path) -> dict:
    quantize_dynamic(str(fp32_path), str(int8_path), weight_type=QuantType.QInt8)
    ops = op_counts(int8_path)
    inserted = sum(v for k, v in ops.items() if k in QUANTIZED_OPS)
    if inserted == 0:
        raise ModelError(f"quantization inserted no int8 operators (ops: {ops}); refusing to publish")
    onnx.checker.check_model(onnx.load(str(int8_path)), full_check=True)
    return {"method": "dynamic", "weight_type": "QInt8", "op_counts": ops}
