"""Export the click model to ONNX with a dynamic candidate axis."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import onnx
import torch

from shared.errors import ModelError

OPSET = 18
INPUTS = ("user", "items")
OUTPUTS = ("scores",)


def export_ranker(click_model: torch.nn.Module, path: Path, dim: int) -> dict:
    """Write the ranker as self-contained ONNX (no external data) and check it.

    Traced with 8 candidates (a batch above 1, so no axis is specialised to 1)
    and exported by the dynamo exporter with `dynamic_shapes`: the candidate
    axis is free, the user row is fixed at one.
    """
    click_model.eval()
    example = (torch.randn(1, dim), torch.randn(8, dim))
    n = torch.export.Dim("candidates", min=1, max=100_000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        program = torch.onnx.export(
            click_model, example, dynamo=True, opset_version=OPSET, input_names=list(INPUTS),
            output_names=list(OUTPUTS), dynamic_shapes={"user": None, "items": {0: n}},
            external_data=False, verbose=False,
        )
    if program is None:
        raise ModelError("torch.onnx.export returned no program")
    path.parent.mkdir(parents=True, exist_ok=True)
    program.save(str(path), external_data=False)
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    return {"opset": OPSET, "exporter": f"torch.onnx dynamo (torch {torch.__version__})",
            "inputs": list(INPUTS), "outputs": list(OUTPUTS)}
