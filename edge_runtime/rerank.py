"""The on-device reranker: the int8 ONNX model, checked before use, one session reused.

Only onnxruntime is needed here (not the onnx package), and it is imported on
first use, so a process that only tracks events or reads its status starts
without it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

import numpy as np

from pocketrank.shared.errors import ModelError
from pocketrank.shared.features import ranker_inputs

EXPECTED_INPUTS = ("user", "items")
EXPECTED_OUTPUTS = ("scores",)
DEFAULT_MAX_BYTES = 8 * 1024 * 1024
M = TypeVar("M")


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


def load_session(blob: bytes, what: str, inputs: tuple[str, ...], outputs: tuple[str, ...],
                 max_bytes: int = DEFAULT_MAX_BYTES):
    """One single-threaded onnxruntime session of a held model (`what`: "ranker", "encoder"), refused with
    ModelError when it is larger than `max_bytes`, reaches for ONNX external data, or its signature is not
    `inputs` -> `outputs`."""
    if len(blob) > max_bytes:
        raise ModelError(f"{what} is {len(blob)} bytes, above the configured bound of {max_bytes}")
    try:
        external = uses_external_data(blob)
    except ValueError as exc:
        raise ModelError(f"{what} could not be loaded: not a valid ONNX protobuf ({exc})") from exc
    if external:
        raise ModelError(f"{what} uses ONNX external data; the device only loads self-contained models")
    import onnxruntime as ort

    opts = ort.SessionOptions()
    # One thread: a phone's rerank competes with its UI, and at 200
    # candidates a thread pool's hand-off costs more than it saves.
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(blob, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise ModelError(f"{what} could not be loaded: {exc}") from exc
    got_in = tuple(i.name for i in session.get_inputs())
    got_out = tuple(o.name for o in session.get_outputs())
    if got_in != inputs or got_out != outputs:
        raise ModelError(f"{what} signature {got_in} -> {got_out}, expected {inputs} -> {outputs}")
    return session


class LocalRanker:
    """One onnxruntime session, created once and reused for every rerank.

    Refuses models larger than `max_bytes`, models that reach for ONNX
    external data, and models whose inputs or outputs are not the ranker's.
    """

    def __init__(self, blob: bytes, max_bytes: int = DEFAULT_MAX_BYTES):
        self.session = load_session(blob, "ranker", EXPECTED_INPUTS, EXPECTED_OUTPUTS, max_bytes)

    def score(self, user_vec: np.ndarray, item_vectors: np.ndarray) -> np.ndarray:
        if len(item_vectors) == 0:
            return np.zeros(0, dtype=np.float32)
        return self.session.run(None, ranker_inputs(user_vec, item_vectors))[0]


class ModelSlot(Generic[M]):
    """A loaded model (the ranker, a sequence model's encoder), keyed by its sha256; loads a new one only when
    the held bundle's changes.

    If the new model cannot be loaded, the error is kept (`error`) and None is
    returned, so the caller falls back to the server's cached order instead of
    failing the rerank.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sha: str | None = None
        self.model: M | None = None
        self.error: str | None = None

    def get(self, sha: str | None, load: Callable[[str], M]) -> M | None:
        if sha is None:
            return None
        if sha == self.sha:
            return self.model
        with self._lock:
            if sha != self.sha:
                try:
                    model, error = load(sha), None
                except Exception as exc:  # ModelError, IntegrityError (file damaged), StorageError
                    model, error = None, str(exc)
                self.sha, self.model, self.error = sha, model, error
        return self.model

    def put(self, sha: str, model: M) -> None:
        with self._lock:
            self.sha, self.model, self.error = sha, model, None
