"""torch -> ONNX for the sequence model: its user encoder (fp32 and int8) and its retrieval-order ranker.

The encoder graph takes one user's history as item vectors (1, L, dim), event
type codes (1, L) and time-gap buckets (1, L) (pocketrank.shared.sequence.encoder_feed
builds the feed on both sides) and gives the user vector (1, dim); L is free
up to the model's max_len. Its int8 version quantizes every constant weight
matmul (pocketrank.exporter.quantize: the attention and feed-forward layers), the
compute the device runs per recommendation.

The ranker is the hard-negative ranker when it beat retrieval order on
validation (`ranker_kind: learned`; its weight products int8 on the device).
Otherwise the published "ranker" is the retrieval score itself,
sigmoid(<user, item>), as a graph with the ranker's signature: the device and
the server run it as they run any ranker, and the manifest says
`ranker_kind: retrieval`. It has no weights, so its int8 file is the same graph.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import onnx
import torch
from torch import nn

from .onnx_export import EXPORTER, OPSET, RANKER_INPUTS, RANKER_OUTPUTS, TRACE_ROWS, _export, check_signature
from .quantize import quantize_ranker

SEQ_ENCODER_INPUTS, SEQ_ENCODER_OUTPUTS = ("items", "types", "gaps"), ("user",)


class RetrievalRanker(nn.Module):
    """(user (1, dim), items (n, dim)) -> sigmoid(items @ user) (n,): retrieval order with the ranker's signature."""

    def forward(self, user: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(user @ items.t()).squeeze(0)


class _LastState(nn.Module):
    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, items: torch.Tensor, types: torch.Tensor, gaps: torch.Tensor) -> torch.Tensor:
        return self.encoder(items, types, gaps)


def _ranker_graph(module: nn.Module, fp32: Path, dim: int) -> None:
    n = torch.export.Dim("candidates", min=1, max=100_000)
    _export(module.eval(), (torch.randn(1, dim), torch.randn(TRACE_ROWS, dim)), fp32, RANKER_INPUTS,
            RANKER_OUTPUTS, {"user": None, "items": {0: n}})
    check_signature(onnx.load(str(fp32)), {"user": [1, dim], "items": ["n", dim]}, {"scores": ["n"]})


def export_retrieval_ranker(fp32: Path, int8: Path, dim: int) -> dict:
    _ranker_graph(RetrievalRanker(), fp32, dim)
    shutil.copyfile(fp32, int8)  # no weights to quantize: the device runs the same graph
    return {"opset": OPSET, "exporter": EXPORTER, "inputs": list(RANKER_INPUTS), "outputs": list(RANKER_OUTPUTS),
            "kind": "retrieval", "precision": "fp32 (no weights)"}


def export_learned_ranker(ranker: nn.Module, fp32: Path, int8: Path, dim: int) -> dict:
    """The hard-negative ranker (server/training/seqranker.py), with the retrieval ranker's signature: fp32 for
    the server, int8 for the device (its weight products; the inner product of the two inputs stays fp32)."""
    _ranker_graph(ranker, fp32, dim)
    quant = quantize_ranker(fp32, int8, per_channel=True)
    return {"opset": OPSET, "exporter": EXPORTER, "inputs": list(RANKER_INPUTS), "outputs": list(RANKER_OUTPUTS),
            "kind": "learned", "precision": "int8", "quantization": quant}


def export_sequence_encoder(encoder: nn.Module, fp32: Path, int8: Path, dim: int, max_len: int) -> dict:
    """fp32 and int8 encoder graphs; raises ModelError if either is malformed or int8 does not run in int8."""
    encoder.eval()
    length = torch.export.Dim("events", min=1, max=max_len)
    example = (torch.randn(1, TRACE_ROWS, dim), torch.randint(1, 6, (1, TRACE_ROWS)),
               torch.randint(1, 30, (1, TRACE_ROWS)))
    _export(_LastState(encoder), example, fp32, SEQ_ENCODER_INPUTS, SEQ_ENCODER_OUTPUTS,
            {"items": {1: length}, "types": {1: length}, "gaps": {1: length}})
    check_signature(onnx.load(str(fp32)), {"items": [1, "L", dim], "types": [1, "L"], "gaps": [1, "L"]},
                    {"user": [1, dim]})
    # One scale per output column: with 7-bit weights (quantize.py) a scale per tensor cost the encoder
    # fidelity (a 2-epoch MovieLens-100k model on 600 users: int8 kept 0.995 of fp32's nDCG@10, top-10
    # overlap 0.996, against 1.000 and 0.996 per column; on 100 users per tensor failed the 0.98 gate).
    quant = quantize_ranker(fp32, int8, per_channel=True)
    return {"opset": OPSET, "exporter": EXPORTER, "inputs": list(SEQ_ENCODER_INPUTS),
            "outputs": list(SEQ_ENCODER_OUTPUTS), "kind": "sequence", "max_len": max_len, "precision": "int8",
            "quantization": quant}
