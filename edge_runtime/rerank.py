"""The on-device reranker: the int8 ONNX model, checked before use, one session reused.

Only onnxruntime is needed here (not the onnx package), and it is imported on
first use, so a process that only tracks events or reads its status starts
without it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

from shared.errors import ModelError
from shared.features import ranker_inputs

EXPECTED_INPUTS = ("user", "items")
EXPECTED_OUTPUTS = ("scores",)
DEFAULT_MAX_BYTES = 8 * 1024 * 1024


def _fields(buf: bytes):
    """Yield (field number, wire type, value) of one protobuf message, top level only."""
    pos, n = 0, len(buf)

    def varint() -> int:
        nonlocal pos
        shift = result = 0
        while True:
            if pos >= n:
                raise ValueError("truncated varint")
            b = buf[pos]
            pos += 1
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7

    while pos < n:
        key = varint()
        number, wtype = key >> 3, key & 7
        if wtype == 0:
            yield number, wtype, varint()
        elif wtype == 2:
            length = varint()
            yield number, wtype, buf[pos : pos + length]
            pos += length
        elif wtype in (1, 5):
            pos += 8 if wtype == 1 else 4
        else:
            raise ValueError(f"unsupported wire type {wtype}")


def uses_external_data(blob: bytes) -> bool:
    """True if any graph initializer says data_location = EXTERNAL.

    A minimal walk of ModelProto.graph (field 7) -> GraphProto.initializer
    (field 5) -> TensorProto.data_location (field 14), so the device needs no
    onnx package. Checked before onnxruntime sees the bytes, because a model
    loaded from bytes would resolve external paths against the working
    directory.
    """
    for number, wtype, graph in _fields(blob):
        if number == 7 and wtype == 2:
            for gnum, gtype, tensor in _fields(graph):
                if gnum == 5 and gtype == 2:
                    for tnum, ttype, value in _fields(tensor):
                        if tnum == 14 and ttype == 0 and value == 1:
                            return True
    return False


class LocalRanker:
    """One onnxruntime session, created once and reused for every rerank.

    Refuses models larger than `max_bytes`, models that reach for ONNX
    external data, and models whose inputs or outputs are not the ranker's.
    """

    def __init__(self, blob: bytes, max_bytes: int = DEFAULT_MAX_BYTES):
        if len(blob) > max_bytes:
            raise ModelError(f"ranker is {len(blob)} bytes, above the configured bound of {max_bytes}")
        try:
            external = uses_external_data(blob)
        except ValueError as exc:
            raise ModelError(f"ranker could not be loaded: not a valid ONNX protobuf ({exc})") from exc
        if external:
            raise ModelError("ranker uses ONNX external data; the device only loads self-contained models")
        import onnxruntime as ort

        opts = ort.SessionOptions()
        # One thread: a phone's rerank competes with its UI, and at 200
        # candidates a thread pool's hand-off costs more than it saves.
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(blob, opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelError(f"ranker could not be loaded: {exc}") from exc
        inputs = tuple(i.name for i in self.session.get_inputs())
        outputs = tuple(o.name for o in self.session.get_outputs())
        if inputs != EXPECTED_INPUTS or outputs != EXPECTED_OUTPUTS:
            raise ModelError(f"ranker signature {inputs} -> {outputs}, expected {EXPECTED_INPUTS} -> {EXPECTED_OUTPUTS}")

    def score(self, user_vec: np.ndarray, item_vectors: np.ndarray) -> np.ndarray:
        if len(item_vectors) == 0:
            return np.zeros(0, dtype=np.float32)
        return self.session.run(None, ranker_inputs(user_vec, item_vectors))[0]


class ModelSlot:
    """The loaded ranker, keyed by its sha256; loads a new one only when the held bundle's changes.

    If the new model cannot be loaded, the error is kept (`error`) and None is
    returned, so the caller falls back to the server's cached order instead of
    failing the rerank.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sha: str | None = None
        self.ranker: LocalRanker | None = None
        self.error: str | None = None

    def get(self, sha: str | None, load: Callable[[str], LocalRanker]) -> LocalRanker | None:
        if sha is None:
            return None
        if sha == self.sha:
            return self.ranker
        with self._lock:
            if sha != self.sha:
                try:
                    ranker, error = load(sha), None
                except Exception as exc:  # ModelError, IntegrityError (file damaged), StorageError
                    ranker, error = None, str(exc)
                self.sha, self.ranker, self.error = sha, ranker, error
        return self.ranker

    def put(self, sha: str, ranker: LocalRanker) -> None:
        with self._lock:
            self.sha, self.ranker, self.error = sha, ranker, None
