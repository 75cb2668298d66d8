"""The quantization methods the shipped one (pocketrank.exporter.quantize) was measured against.

bench/edge_model.py builds each of these from the same fp32 ranker and prints
size, speed and agreement with fp32 side by side, and how many of the weight
matmuls onnxruntime really runs in int8 afterwards (`int8_matmuls` of
`weight_matmuls`): a method that leaves one in float is reported, not hidden.
"""

from __future__ import annotations

import logging
from pathlib import Path

import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)

from pocketrank.exporter.onnx_export import strip
from pocketrank.exporter.parity import HeldOut
from pocketrank.exporter.quantize import _constant_weight, int8_matmuls, runtime_op_counts


def weight_nodes(fp32_path: Path) -> tuple[list[str], list[str]]:
    """(matmuls with a large constant weight, the other matmuls): every method quantizes the first only.

    Told as nodes to exclude, because onnxruntime renames a Gemm it splits
    into MatMul + Add before it matches nodes to quantize.
    """
    model = onnx.load(str(fp32_path))
    inits = {t.name: t for t in model.graph.initializer}
    matmuls = [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm")]
    weights = [n.name for n in matmuls if _constant_weight(n, inits)]
    return weights, [n.name for n in matmuls if n.name not in weights]


def ort_dynamic(fp32_path: Path, out: Path, weight_type: str = "QInt8") -> dict:
    """onnxruntime's quantize_dynamic, limited to the weight matmuls."""
    nodes, others = weight_nodes(fp32_path)
    with _quiet():
        quantize_dynamic(str(fp32_path), str(out), weight_type=getattr(QuantType, weight_type),
                         op_types_to_quantize=["MatMul", "Gemm"], nodes_to_exclude=others)
    _strip_file(out)
    return {"method": "ort quantize_dynamic", "weight_type": weight_type, **_ran(out, nodes)}


class _Feeds(CalibrationDataReader):
    def __init__(self, held: HeldOut):
        self._it = iter(list(held.feeds()))

    def get_next(self):
        return next(self._it, None)


def static_qdq(fp32_path: Path, out: Path, calibration: HeldOut, per_channel: bool = True) -> dict:
    """Static QDQ: uint8 activations with ranges from calibration users' real inputs, int8 weights."""
    nodes, others = weight_nodes(fp32_path)
    with _quiet():
        quantize_static(str(fp32_path), str(out), _Feeds(calibration), quant_format=QuantFormat.QDQ,
                        per_channel=per_channel, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=["MatMul", "Gemm"], nodes_to_exclude=others,
                        calibrate_method=CalibrationMethod.MinMax)
    _strip_file(out)
    return {"method": "static QDQ", "per_channel": per_channel, "calibration_inputs": len(calibration.users),
            **_ran(out, nodes)}


def _ran(path: Path, nodes: list[str]) -> dict:
    ops = runtime_op_counts(path)
    return {"weight_matmuls": len(nodes), "int8_matmuls": int8_matmuls(ops), "runtime_op_counts": ops}


def _strip_file(path: Path) -> None:
    onnx.save(strip(onnx.load(str(path))), str(path))


class _quiet:
    """onnxruntime.quantization logs advice at WARNING for every call."""

    def __enter__(self):
        self._level = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)

    def __exit__(self, *exc):
        logging.getLogger().setLevel(self._level)
