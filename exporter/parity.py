"""Parity gates: a model that ranks differently on the device is never published."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from shared.errors import ModelError

FP32_ATOL = 1e-4
MIN_INT8_TOP10_OVERLAP = 0.9


@dataclass
class ParityReport:
    fp32_max_abs_diff: float
    int8_max_abs_diff: float
    int8_mean_top10_overlap: float
    int8_min_top10_overlap: float
    users: int
    candidates: int

    def to_dict(self) -> dict:
        return asdict(self)


def session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _top10(scores: np.ndarray) -> set[int]:
    return set(np.argsort(-scores, kind="stable")[:10].tolist())


def check_parity(click_model: torch.nn.Module, fp32_path: Path, int8_path: Path,
                 users: np.ndarray, candidates: list[np.ndarray]) -> ParityReport:
    """Score each held-out user's candidates with torch, fp32 ONNX and int8 ONNX.

    Raises ModelError when fp32 differs from torch by more than FP32_ATOL or
    the int8 top-10 overlaps fp32's by less than MIN_INT8_TOP10_OVERLAP.
    """
    fp32, int8 = session(fp32_path), session(int8_path)
    fp_diff, q_diff, overlaps = 0.0, 0.0, []
    for u, items in zip(users, candidates):
        feed = {"user": u.reshape(1, -1).astype(np.float32), "items": items.astype(np.float32)}
        with torch.no_grad():
            ref = click_model(torch.from_numpy(feed["user"]), torch.from_numpy(feed["items"])).numpy()
        a = fp32.run(None, feed)[0]
        b = int8.run(None, feed)[0]
        fp_diff = max(fp_diff, float(np.max(np.abs(a - ref))))
        q_diff = max(q_diff, float(np.max(np.abs(b - a))))
        overlaps.append(len(_top10(a) & _top10(b)) / 10)
    report = ParityReport(fp_diff, q_diff, float(np.mean(overlaps)), float(np.min(overlaps)),
                          len(users), int(np.mean([len(c) for c in candidates])))
    if report.fp32_max_abs_diff > FP32_ATOL:
        raise ModelError(f"fp32 ONNX differs from torch by {report.fp32_max_abs_diff:.2e} > {FP32_ATOL}")
    if report.int8_mean_top10_overlap < MIN_INT8_TOP10_OVERLAP:
        raise ModelError(
            f"int8 top-10 overlap {report.int8_mean_top10_overlap:.3f} < {MIN_INT8_TOP10_OVERLAP}; not publishing"
        )
    return report
