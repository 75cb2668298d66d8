"""torch -> ONNX for the ranker and the user encoder, each checked before it is kept.

Both go through the dynamo exporter with `dynamic_shapes` (mixing it with
`dynamic_axes` silently put the dynamic axis on the wrong inputs), traced with
8 rows so no axis is specialised to 1. After export every file is checked
three ways: onnx.checker with full_check, the graph's signature (names, which
axes are free, which are fixed), and no external data.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import onnx
import torch

from pocketrank.shared.errors import ModelError

from .encoder import SequenceEncoder

OPSET = 18
EXPORTER = f"torch.onnx.export(dynamo=True, dynamic_shapes) torch {torch.__version__}"
TRACE_ROWS = 8
MAX_ROWS = 100_000
RANKER_INPUTS, RANKER_OUTPUTS = ("user", "items"), ("scores",)
ENCODER_INPUTS, ENCODER_OUTPUTS = ("items", "weights"), ("user",)
INPUTS, OUTPUTS = RANKER_INPUTS, RANKER_OUTPUTS  # the ranker's, as older callers import them


def export_ranker(click_model: torch.nn.Module, path: Path, dim: int) -> dict:
    """(user (1, dim), items (n, dim)) -> scores (n,), n free."""
    n = torch.export.Dim("candidates", min=1, max=MAX_ROWS)
    example = (torch.randn(1, dim), torch.randn(TRACE_ROWS, dim))
    _export(click_model, example, path, RANKER_INPUTS, RANKER_OUTPUTS, {"user": None, "items": {0: n}})
    model = onnx.load(str(path))
    check_signature(model, {"user": [1, dim], "items": ["n", dim]}, {"scores": ["n"]})
    return {"opset": OPSET, "exporter": EXPORTER, "inputs": list(RANKER_INPUTS), "outputs": list(RANKER_OUTPUTS)}


def export_encoder(path: Path, dim: int) -> dict:
    """(items (L, dim), weights (L,)) -> user (1, dim), L free: pocketrank.shared.features' fold as a graph."""
    length = torch.export.Dim("events", min=1, max=MAX_ROWS)
    example = (torch.randn(TRACE_ROWS, dim), torch.rand(TRACE_ROWS))
    _export(SequenceEncoder(), example, path, ENCODER_INPUTS, ENCODER_OUTPUTS,
            {"items": {0: length}, "weights": {0: length}})
    model = onnx.load(str(path))
    check_signature(model, {"items": ["L", dim], "weights": ["L"]}, {"user": [1, dim]})
    return {"opset": OPSET, "exporter": EXPORTER, "inputs": list(ENCODER_INPUTS), "outputs": list(ENCODER_OUTPUTS),
            "precision": "fp32"}


def _export(module: torch.nn.Module, example: tuple, path: Path, inputs: tuple, outputs: tuple,
            dynamic_shapes: dict) -> None:
    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        program = torch.onnx.export(
            module, example, dynamo=True, opset_version=OPSET, input_names=list(inputs),
            output_names=list(outputs), dynamic_shapes=dynamic_shapes, external_data=False, verbose=False,
        )
    if program is None:
        raise ModelError("torch.onnx.export returned no program")
    model = strip(program.model_proto)
    onnx.checker.check_model(model, full_check=True)
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        raise ModelError(f"{path.name} uses external data; devices load only self-contained models")
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def strip(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop what the exporter records for debugging: per-node stack traces and names.

    They hold the server's source paths (which a published file should not
    carry) and were a tenth of the fp32 ranker's bytes. Shapes are kept.
    """
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    model.graph.doc_string = ""
    del model.metadata_props[:]
    return model


def _dims(value_info: onnx.ValueInfoProto) -> list:
    return [d.dim_param or d.dim_value if (d.dim_param or d.HasField("dim_value")) else None
            for d in value_info.type.tensor_type.shape.dim]


def check_signature(model: onnx.ModelProto, inputs: dict[str, list], outputs: dict[str, list]) -> None:
    """Names in order, fixed dims equal, and free dims free and tied together as `expected` says.

    Letters in the expected shapes stand for free axes: the same letter must be
    the same symbol in the graph (the candidate axis of `items` is the axis of
    `scores`), and a free axis must not have been fixed to the traced size.
    """
    got = {vi.name: _dims(vi) for vi in list(model.graph.input) + list(model.graph.output)}
    names = ([vi.name for vi in model.graph.input], [vi.name for vi in model.graph.output])
    if names != (list(inputs), list(outputs)):
        raise ModelError(f"exported signature {names[0]} -> {names[1]}, expected {list(inputs)} -> {list(outputs)}")
    symbols: dict[str, str] = {}
    for name, want in {**inputs, **outputs}.items():
        have = got[name]
        ok = len(have) == len(want)
        for w, h in zip(want, have) if ok else ():
            if isinstance(w, str):
                ok = ok and isinstance(h, str) and symbols.setdefault(w, h) == h
            else:
                ok = ok and h == w
        if not ok:
            raise ModelError(f"exported {name} has shape {have}, expected {want} (letters are free axes)")
