"""The on-device reranker: the int8 ONNX model from the cache, checked before use.

Only onnxruntime is needed here (not the onnx package), so the edge install
stays small.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from shared.errors import ModelError
from shared.features import ranker_inputs

EXPECTED_INPUTS = ("user", "items")
EXPECTED_OUTPUTS = ("scores",)
DEFAULT_MAX_BYTES = 8 * 1024 * 1024


class LocalRanker:
    """One onnxruntime session, created once and reused for every rerank.

    Refuses models larger than `max_bytes`, models that reach for ONNX
    external data (a session built from bytes has no directory to read it
    from, so loading fails and we say why), and models whose inputs or
    outputs are not the ranker's.
    """

    def __init__(self, blob: bytes, max_bytes: int = DEFAULT_MAX_BYTES):
        if len(blob) > max_bytes:
            raise ModelError(f"ranker is {len(blob)} bytes, above the configured bound of {max_bytes}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(blob, opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors
            hint = " (it references external data; export self-contained models)" if "external" in str(exc).lower() else ""
            raise ModelError(f"ranker could not be loaded{hint}: {exc}") from exc
        inputs = tuple(i.name for i in self.session.get_inputs())
        outputs = tuple(o.name for o in self.session.get_outputs())
        if inputs != EXPECTED_INPUTS or outputs != EXPECTED_OUTPUTS:
            raise ModelError(f"ranker signature {inputs} -> {outputs}, expected {EXPECTED_INPUTS} -> {EXPECTED_OUTPUTS}")

    def score(self, user_vec: np.ndarray, item_vectors: np.ndarray) -> np.ndarray:
        if len(item_vectors) == 0:
            return np.zeros(0, dtype=np.float32)
        return self.session.run(None, ranker_inputs(user_vec, item_vectors))[0]
