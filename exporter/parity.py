"""Parity gates: a model that would rank differently on the device is never published.

Two steps, each checked on held-out users' real vectors and candidates:
fp32 ONNX against torch (the export is exact), then int8 against fp32 (the
quantization keeps the ranking). The user encoder is checked against the fold
it replaces (check_encoder). A failed gate raises ModelError naming every
gate that failed; the figures of all gates go into export.json and from there
into the signed manifest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from pocketrank.shared.errors import ModelError
from pocketrank.shared.features import TYPE_WEIGHTS, fold_events, sequence_weights, user_vector

from . import agreement

FP32_ATOL = 1e-4
# name in the report -> (limit, "min" if the value must reach it, "max" if it must not pass it)
INT8_GATES: dict[str, tuple[float, str]] = {
    "int8_mean_top10_overlap": (0.95, "min"),
    "int8_mean_kendall_tau": (0.98, "min"),
    "int8_auc_drop": (0.002, "max"),
    "int8_ndcg10_drop_rel": (0.01, "max"),
}


@dataclass(frozen=True)
class HeldOut:
    """Users the gates judge on: each one's vector, candidates (n, dim) and which were chosen next."""

    users: np.ndarray  # (U, dim) float32
    candidates: list[np.ndarray]
    labels: list[np.ndarray]  # bool (n,) per user

    def feeds(self):
        for u, items in zip(self.users, self.candidates):
            yield {"user": np.asarray(u, dtype=np.float32).reshape(1, -1),
                   "items": np.ascontiguousarray(items, dtype=np.float32)}


@dataclass
class ParityReport:
    fp32_max_abs_diff: float
    int8_max_abs_diff: float
    int8_mean_top10_overlap: float
    int8_min_top10_overlap: float
    int8_mean_kendall_tau: float
    int8_min_kendall_tau: float
    auc_fp32: float
    auc_int8: float
    int8_auc_drop: float
    ndcg10_fp32: float
    ndcg10_int8: float
    int8_ndcg10_drop_rel: float
    users: int
    candidates: int
    gates: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def failed(self) -> list[str]:
        return [name for name, g in self.gates.items() if not g["passed"]]


def session(path: Path | bytes) -> ort.InferenceSession:
    """A session configured as the device configures its own (one thread)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(path if isinstance(path, bytes) else str(path), opts,
                                providers=["CPUExecutionProvider"])


def onnx_scores(sess: ort.InferenceSession, held: HeldOut) -> list[np.ndarray]:
    return [sess.run(None, feed)[0] for feed in held.feeds()]


def torch_scores(click_model: torch.nn.Module, held: HeldOut) -> list[np.ndarray]:
    click_model.eval()
    with torch.no_grad():
        return [click_model(torch.from_numpy(f["user"]), torch.from_numpy(f["items"])).numpy()
                for f in held.feeds()]


def compare(ref: list[np.ndarray], test: list[np.ndarray], labels: list[np.ndarray]) -> dict:
    """How well `test` keeps `ref`'s rankings, and what each does on the held-out labels."""
    overlap = [agreement.top_k_overlap(a, b, 10) for a, b in zip(ref, test)]
    tau = [agreement.kendall_tau(a, b) for a, b in zip(ref, test)]
    aucs = np.array([(agreement.auc(a, y), agreement.auc(b, y)) for a, b, y in zip(ref, test, labels)])
    aucs = aucs[~np.isnan(aucs).any(axis=1)]
    ndcg = np.array([(agreement.ndcg_at_k(a, y), agreement.ndcg_at_k(b, y)) for a, b, y in zip(ref, test, labels)])
    auc_ref, auc_test = (aucs.mean(axis=0) if len(aucs) else (float("nan"),) * 2)
    ndcg_ref, ndcg_test = ndcg.mean(axis=0)
    return {
        "max_abs_diff": float(max(np.max(np.abs(a - b)) for a, b in zip(ref, test))),
        "mean_top10_overlap": float(np.mean(overlap)), "min_top10_overlap": float(np.min(overlap)),
        "mean_kendall_tau": float(np.mean(tau)), "min_kendall_tau": float(np.min(tau)),
        "auc_ref": float(auc_ref), "auc_test": float(auc_test), "auc_drop": float(auc_ref - auc_test),
        "ndcg10_ref": float(ndcg_ref), "ndcg10_test": float(ndcg_test),
        "ndcg10_drop_rel": float((ndcg_ref - ndcg_test) / ndcg_ref) if ndcg_ref > 0 else 0.0,
    }


def _gate(value: float, limit: float, kind: str) -> dict:
    passed = bool(value >= limit) if kind == "min" else bool(value <= limit)
    return {"value": value, "limit": limit, "must_be": "at least" if kind == "min" else "at most", "passed": passed}


def check_parity(click_model: torch.nn.Module, fp32_path: Path, int8_path: Path, held: HeldOut,
                 gates: dict[str, tuple[float, str]] | None = None) -> ParityReport:
    """Score every held-out user's candidates with torch, fp32 ONNX and int8 ONNX; gate the result
    (`gates`: INT8_GATES unless given).

    Raises ModelError when fp32 differs from torch by more than FP32_ATOL or
    any INT8_GATES figure misses its limit; the message names each failure.
    """
    ref = torch_scores(click_model, held)
    fp32 = onnx_scores(session(fp32_path), held)
    int8 = onnx_scores(session(int8_path), held)
    fp_diff = float(max(np.max(np.abs(a - b)) for a, b in zip(fp32, ref)))
    c = compare(fp32, int8, held.labels)
    report = ParityReport(
        fp32_max_abs_diff=fp_diff, int8_max_abs_diff=c["max_abs_diff"],
        int8_mean_top10_overlap=c["mean_top10_overlap"], int8_min_top10_overlap=c["min_top10_overlap"],
        int8_mean_kendall_tau=c["mean_kendall_tau"], int8_min_kendall_tau=c["min_kendall_tau"],
        auc_fp32=c["auc_ref"], auc_int8=c["auc_test"], int8_auc_drop=c["auc_drop"],
        ndcg10_fp32=c["ndcg10_ref"], ndcg10_int8=c["ndcg10_test"], int8_ndcg10_drop_rel=c["ndcg10_drop_rel"],
        users=len(held.users), candidates=int(np.mean([len(x) for x in held.candidates])),
    )
    report.gates = {"fp32_max_abs_diff": _gate(fp_diff, FP32_ATOL, "max")}
    report.gates.update({name: _gate(getattr(report, name), limit, kind)
                         for name, (limit, kind) in (INT8_GATES if gates is None else gates).items()})
    if report.failed:
        reasons = "; ".join(f"{n} {report.gates[n]['value']:.4g} (must be {report.gates[n]['must_be']} "
                            f"{report.gates[n]['limit']})" for n in report.failed)
        raise ModelError(f"parity gate failed, not publishing: {reasons}")
    return report


ENCODER_ATOL = 1e-5


def encoder_inputs(vectors: np.ndarray, types: list[str]) -> dict[str, np.ndarray]:
    """The encoder's feed for events oldest first: only the events that move the fold.

    pocketrank.shared.features.update_user_state neither adds nor decays on an event of
    weight 0 (an impression), while sequence_weights counts it as a step of
    decay; so the weights are taken over the moving events alone.
    """
    moving = [i for i, t in enumerate(types) if TYPE_WEIGHTS.get(t, 0.0) > 0]
    return {"items": np.ascontiguousarray(np.asarray(vectors, dtype=np.float32)[moving]),
            "weights": sequence_weights([types[i] for i in moving])}


def check_encoder(path: Path, sequences: list[tuple[np.ndarray, list[str]]], dim: int) -> dict:
    """The encoder graph against pocketrank.shared.features' event-by-event fold on real sequences.

    `sequences` are (item vectors (L, dim), event types) oldest first. Raises
    ModelError beyond ENCODER_ATOL: the device's state must be the server's.
    """
    sess = session(path)
    worst = 0.0
    for vectors, types in sequences:
        ref = user_vector(fold_events(zip(types, vectors), dim))
        got = sess.run(None, encoder_inputs(vectors, types))[0]
        worst = max(worst, float(np.max(np.abs(got[0] - ref))))
    report = {"max_abs_diff_vs_fold": worst, "sequences": len(sequences),
              "max_events": max((len(t) for _, t in sequences), default=0), "limit": ENCODER_ATOL}
    if worst > ENCODER_ATOL:
        raise ModelError(f"encoder differs from pocketrank.shared.features' fold by {worst:.2e} > {ENCODER_ATOL}; not publishing")
    return report
