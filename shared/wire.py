"""Wire format v2: packed binary records, zstandard frames, record signatures, deltas and the manifest.

Documented for other clients in docs/wire-format.md; this module is the
reference implementation. All integers are little-endian.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import zstandard

from .errors import IntegrityError, ValidationError
from .features import UserState

# 2: per-record signatures (PRR1) and list deltas replace v1's `users` index artifact.
# 3: candidate records are PRC2 (no user state, shuffled ids, quantized scores).
# 4: signed per-item entries (PRI1) in the sync answer replace the `items` and `catalog` artifacts;
#    the manifest carries the popular list.
# 5: PRI2 entries carry the marketplace's own product id.
# 6: the sync answer is sealed (PRA1: its states, unknown users and each list's item-entry digest, bound to
#    the version, cursor and model under the manifest's key); no JSON part may hold a non-finite number.
WIRE_VERSION = 6
ZSTD_LEVEL = 3
# A decompressed part larger than this is refused: protects the device from
# a zstd bomb in a corrupted or hostile frame.
MAX_DECOMPRESSED = 64 * 1024 * 1024
# One user's raw PRC2 record: 200 candidates take ~1 KB, so 2 MiB leaves room
# for 400k candidates and still bounds what a hostile record or delta inflates to.
MAX_RECORD_BYTES = 2 * 1024 * 1024

CANDIDATES_MAGIC = b"PRC2"
CANDIDATES_MAGIC_V1 = b"PRC1"  # wire 2; still read (see unpack_candidates_raw)
VECTORS_MAGIC = b"PRV1"
STATE_MAGIC = b"PRS1"
RECORD_SIG_MAGIC = b"PRR1"
SEAL_MAGIC = b"PRA1"
# JSON nesting: a sync answer needs 4 levels, a manifest 5; 32 leaves room and bounds what a hostile answer
# makes a parser walk.
MAX_JSON_DEPTH = 32


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def compress(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True).compress(data)


def decompress(data: bytes, cap: int | None = None, base: bytes | None = None) -> bytes:
    """Inflate one zstd frame to at most `cap` bytes (default MAX_DECOMPRESSED); `base` is the
    raw-content dictionary of a delta."""
    cap = MAX_DECOMPRESSED if cap is None else cap
    # max_output_size is ignored when the frame header declares its size, so
    # the declared size is checked first and undeclared sizes are read bounded.
    try:
        dctx = (zstandard.ZstdDecompressor(dict_data=_raw_dict(base)) if base is not None
                else zstandard.ZstdDecompressor())
        declared = zstandard.frame_content_size(data)
        if declared > cap:
            raise IntegrityError(f"zstandard frame declares {declared} bytes, above the cap of {cap}")
        if declared >= 0:
            return dctx.decompress(data)
        with dctx.stream_reader(data) as reader:
            out = reader.read(cap + 1)
    except zstandard.ZstdError as exc:
        raise IntegrityError(f"zstandard frame could not be decoded: {exc}") from exc
    if len(out) > cap:
        raise IntegrityError(f"zstandard frame inflates past the cap of {cap} bytes")
    return out


def _raw_dict(base: bytes) -> zstandard.ZstdCompressionDict:
    return zstandard.ZstdCompressionDict(base, dict_type=zstandard.DICT_TYPE_RAWCONTENT)


# --- list deltas: the new raw record compressed against the held one ---


def make_delta(base_raw: bytes, new_raw: bytes) -> bytes:
    """A zstd frame of `new_raw` whose window starts with `base_raw` (a raw-content dictionary).

    Unchanged runs of ids and scores become back-references into the held
    record, so a list in which 1% of candidates moved costs a few dozen bytes.
    The frame declares its content size (the device's cap check) and carries no
    dictionary id (raw-content dictionaries have none): the base is named by
    the sync answer's base_version and base_sha256 instead.
    """
    cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL, dict_data=_raw_dict(base_raw), write_content_size=True,
                                    write_dict_id=False)
    return cctx.compress(new_raw)


def apply_delta(base_raw: bytes, frame: bytes, cap: int = MAX_RECORD_BYTES) -> bytes:
    """The new raw record, or IntegrityError (bad frame, or above `cap`). The caller checks its sha256."""
    return decompress(frame, cap, base=base_raw)


# --- record signatures: each user's record, signed per bundle version ---


def record_message(version: int, user_id: str, raw_sha256: bytes) -> bytes:
    """The bytes ed25519 signs for one record: "PRR1", u32 version, u8 len, utf-8 user id, sha256(raw PRC2).

    The version binds the record to one signed manifest (and so to its model):
    a record signature from another version or another user never verifies.
    """
    uid = user_id.encode()
    if not 0 < len(uid) <= 255 or len(raw_sha256) != 32 or not 0 <= version < 2**32:
        raise ValidationError("record", "user id must be 1-255 bytes, sha256 32 bytes, version a u32")
    return RECORD_SIG_MAGIC + struct.pack("<IB", version, len(uid)) + uid + raw_sha256


def check_digest(data: bytes, sha256: str, length: int, what: str) -> None:
    """Raise IntegrityError unless data has exactly the promised length and sha256."""
    if len(data) != length:
        raise IntegrityError(f"{what}: expected {length} bytes, got {len(data)}; retry the download")
    if sha256_hex(data) != sha256:
        raise IntegrityError(f"{what}: sha256 mismatch; the bytes were corrupted or tampered with")


# --- candidate record: one user's ranked candidates (PRC2) ---
#
# PRC1 (wire 2) carried the 64-dim user state (~270 B) and f16 scores; a device
# never used that state (the sync answer's `states` carries the live one) and
# the scores only label the cached fallback order. PRC2 drops the state,
# byte-shuffles the ids and quantizes the non-increasing scores to u8 steps:
# 200 candidates over a 50,000-product Zipf catalogue take ~480 B compressed
# (PRC1: ~1,130 B). Measured in docs/benchmarks.md ("Delta sync").

# Score levels: each score is within half a step, range / (2 * (SCORE_LEVELS - 1)),
# of the server's. The rank order is carried exactly by position; the device
# reranks with its model and shows these scores only on the cached fallback.
SCORE_LEVELS = 32
PRC2_HEADER = struct.Struct("<4sIff")  # magic, n, top score, step


def pack_candidates(item_ids: np.ndarray, scores: np.ndarray) -> bytes:
    """One user's record, zstd-compressed (see pack_candidates_raw)."""
    return compress(pack_candidates_raw(item_ids, scores))


def quantize_scores(scores: np.ndarray, levels: int = SCORE_LEVELS) -> tuple[float, float, np.ndarray]:
    """(top, step, codes): score i is decoded as top - step * codes[i], codes non-decreasing in [0, levels-1].

    Codes come from each score alone (not from the previous one), so errors do not accumulate.
    """
    if not 2 <= levels <= 256:
        raise ValidationError("levels", "must be 2-256: a step count is one byte")
    sc = np.asarray(scores, dtype=np.float64)
    if len(sc) == 0:
        return 0.0, 0.0, np.zeros(0, np.int64)
    if not np.all(np.isfinite(sc)):
        raise ValidationError("scores", "must be finite")
    if np.any(np.diff(sc) > 0):
        raise ValidationError("scores", "must be non-increasing: a record lists candidates best first")
    top = float(np.float32(sc[0]))
    spread = top - float(sc[-1])
    step = float(np.float32(spread / (levels - 1))) if spread > 0 else 0.0
    if step == 0.0:
        return top, 0.0, np.zeros(len(sc), np.int64)
    codes = np.clip(np.round((top - sc) / step), 0, levels - 1).astype(np.int64)
    return top, step, np.maximum.accumulate(codes)


def decode_scores(top: float, step: float, codes: np.ndarray) -> np.ndarray:
    """float32(top - step * code), computed in float64: the exact values every client must produce.
    IntegrityError when one is not finite (a step near the f32 maximum times a code overflows)."""
    out = (np.float64(top) - np.float64(step) * codes.astype(np.float64)).astype(np.float32)
    if not np.all(np.isfinite(out)):
        raise IntegrityError("candidate record: its scores overflow to non-finite values")
    return out


def _shuffle(a: np.ndarray) -> bytes:
    """Byte-shuffle: every element's byte 0, then every byte 1, ... (zstd then finds the zero high bytes)."""
    return np.ascontiguousarray(a).view(np.uint8).reshape(len(a), a.dtype.itemsize).T.tobytes()


def _unshuffle(data: bytes, dtype: str, n: int) -> np.ndarray:
    size = np.dtype(dtype).itemsize
    return np.frombuffer(data, dtype=np.uint8, count=n * size).reshape(size, n).T.copy().view(dtype).reshape(n)


def pack_candidates_raw(item_ids: np.ndarray, scores: np.ndarray, levels: int = SCORE_LEVELS) -> bytes:
    """One user's record, uncompressed: what record signatures and deltas are computed over.

    Layout (docs/wire-format.md, PRC2): magic "PRC2", u32 n, f32 top score,
    f32 step, n x i32 item ids in rank order byte-shuffled (n low bytes, then
    n second bytes, ...), n x u8 score step counts (code[i] - code[i-1],
    code[-1] = 0). Scores must be non-increasing (best first).
    """
    ids = np.asarray(item_ids)
    sc = np.asarray(scores)
    if ids.shape != sc.shape or ids.ndim != 1:
        raise ValidationError("candidates", "item_ids and scores must be 1-d and the same length")
    if len(ids) and (ids.min() < -(2**31) or ids.max() >= 2**31):
        raise ValidationError("candidates", "item ids must fit in a signed 32-bit integer")
    top, step, codes = quantize_scores(sc, levels)
    steps = np.diff(codes, prepend=0).astype(np.uint8)
    return (PRC2_HEADER.pack(CANDIDATES_MAGIC, len(ids), top, step)
            + _shuffle(ids.astype("<i4")) + steps.tobytes())


def unpack_candidates(blob: bytes) -> tuple[np.ndarray, np.ndarray]:
    return unpack_candidates_raw(decompress(blob, MAX_RECORD_BYTES))


def unpack_candidates_raw(raw: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(item ids int64, scores float32) of a raw PRC2 record; a PRC1 record (wire 2) is read too, its state dropped,
    so a device holding PRC1 records from before an upgrade still repacks them."""
    if raw[:4] == CANDIDATES_MAGIC_V1:
        return _unpack_prc1(raw)
    try:
        if raw[:4] != CANDIDATES_MAGIC:
            raise IntegrityError("candidate record: bad magic")
        _, n, top, step = PRC2_HEADER.unpack_from(raw, 0)
        off = PRC2_HEADER.size
        if len(raw) != off + 5 * n:
            raise IntegrityError(f"candidate record: {len(raw)} bytes, {off + 5 * n} expected for {n} candidates")
        if not (np.isfinite(top) and np.isfinite(step) and step >= 0):
            raise IntegrityError("candidate record: top score and step must be finite, step >= 0")
        ids = _unshuffle(raw[off : off + 4 * n], "<i4", n).astype(np.int64)
        codes = np.cumsum(np.frombuffer(raw, dtype=np.uint8, count=n, offset=off + 4 * n), dtype=np.int64)
    except (struct.error, ValueError) as exc:
        raise IntegrityError(f"candidate record is truncated: {exc}") from exc
    return ids, decode_scores(top, step, codes)


def _unpack_prc1(raw: bytes) -> tuple[np.ndarray, np.ndarray]:
    """PRC1: "PRC1", u32 n, n x i32 ids, n x f16 scores, u16 dim, dim x f32, f32, u32 (the state, ignored)."""
    try:
        (n,) = struct.unpack_from("<I", raw, 4)
        ids = np.frombuffer(raw, dtype="<i4", count=n, offset=8).astype(np.int64)
        scores = np.frombuffer(raw, dtype="<f2", count=n, offset=8 + 4 * n).astype(np.float32)
        (dim,) = struct.unpack_from("<H", raw, 8 + 6 * n)
        if len(raw) != 18 + 6 * n + 4 * dim:
            raise IntegrityError("candidate record: trailing bytes")
    except (struct.error, ValueError) as exc:
        raise IntegrityError(f"candidate record is truncated: {exc}") from exc
    if not np.all(np.isfinite(scores)):
        raise IntegrityError("candidate record: scores must be finite")
    return ids, scores


# --- a live user state, pushed beside the bundle on every sync ---


def pack_state(state: UserState) -> bytes:
    """Layout (uncompressed, 14 + 4*dim bytes): magic "PRS1", u16 dim, dim x f32 S, f32 W, u32 n."""
    s = np.asarray(state.s, dtype="<f4")
    return STATE_MAGIC + struct.pack("<H", len(s)) + s.tobytes() + struct.pack("<fI", state.w, state.n_events)


def unpack_state(raw: bytes) -> UserState:
    """The PRS1 state, or IntegrityError (bad layout, or a value that is not finite: a NaN state would
    give every candidate a NaN score)."""
    try:
        if raw[:4] != STATE_MAGIC:
            raise IntegrityError("user state: bad magic")
        (dim,) = struct.unpack_from("<H", raw, 4)
        if len(raw) != 14 + 4 * dim:
            raise IntegrityError("user state: wrong length")
        s = np.frombuffer(raw, dtype="<f4", count=dim, offset=6).astype(np.float32)
        w, n = struct.unpack_from("<fI", raw, 6 + 4 * dim)
    except struct.error as exc:
        raise IntegrityError(f"user state is truncated: {exc}") from exc
    if not (np.all(np.isfinite(s)) and np.isfinite(w)):
        raise IntegrityError("user state: S and W must be finite")
    return UserState(s, float(w), int(n))


# --- a sequence model's live user history, pushed instead of a state when the bundle's model is one ---

HISTORY_MAGIC = b"PRH1"
HISTORY_ROW = np.dtype([("item", "<i4"), ("type", "u1"), ("ts", "<f8")])
MAX_HISTORY_ROWS = 1000


def pack_history(items: np.ndarray, types: np.ndarray, times: np.ndarray) -> bytes:
    """Layout: magic "PRH1", u16 n, n x (i32 item index (0: none, a search), u8 EVENT_TYPES index, f64 unix
    seconds), oldest first: the events the server holds for the user, which the device's encoder reads."""
    rows = np.zeros(len(items), dtype=HISTORY_ROW)
    rows["item"], rows["type"], rows["ts"] = items, types, times
    return HISTORY_MAGIC + struct.pack("<H", len(rows)) + rows.tobytes()


def unpack_history(raw: bytes, n_types: int) -> np.ndarray:
    """The PRH1 rows (a HISTORY_ROW array), or IntegrityError: bad layout, a type code out of range, an item
    index below 0 or a time that is not finite."""
    if raw[:4] != HISTORY_MAGIC or len(raw) < 6:
        raise IntegrityError("user history: bad magic")
    (n,) = struct.unpack_from("<H", raw, 4)
    if n > MAX_HISTORY_ROWS or len(raw) != 6 + n * HISTORY_ROW.itemsize:
        raise IntegrityError("user history: wrong length")
    rows = np.frombuffer(raw, dtype=HISTORY_ROW, count=n, offset=6)
    if not (np.all(np.isfinite(rows["ts"])) and np.all(rows["type"] < n_types) and np.all(rows["item"] >= 0)):
        raise IntegrityError("user history: a time that is not finite, an unknown event type or a negative item")
    return rows


# --- item vectors: the catalogue's embeddings ---


def pack_vectors(item_ids: np.ndarray, vectors: np.ndarray) -> bytes:
    """Layout: magic "PRV1", u32 n, u16 dim, n x i32 ids, n x dim f32 (row-major)."""
    ids = np.asarray(item_ids, dtype="<i4")
    vec = np.ascontiguousarray(vectors, dtype="<f4")
    if vec.ndim != 2 or vec.shape[0] != len(ids):
        raise ValidationError("vectors", "must be an (n, dim) matrix with one row per id")
    raw = VECTORS_MAGIC + struct.pack("<IH", len(ids), vec.shape[1]) + ids.tobytes() + vec.tobytes()
    return compress(raw)


def unpack_vectors(blob: bytes) -> tuple[np.ndarray, np.ndarray]:
    raw = decompress(blob)
    try:
        if raw[:4] != VECTORS_MAGIC:
            raise IntegrityError("vector table: bad magic")
        n, dim = struct.unpack_from("<IH", raw, 4)
        off = 10
        if len(raw) != off + 4 * n + 4 * n * dim:
            raise IntegrityError("vector table: wrong length")
        ids = np.frombuffer(raw, dtype="<i4", count=n, offset=off).astype(np.int64)
        vec = np.frombuffer(raw, dtype="<f4", count=n * dim, offset=off + 4 * n).reshape(n, dim)
    except (struct.error, ValueError) as exc:
        raise IntegrityError(f"vector table is truncated: {exc}") from exc
    return ids, vec.astype(np.float32)


# --- item metadata and manifest: canonical JSON ---


def canonical_json(obj: Any) -> bytes:
    """The exact bytes that are hashed and signed: sorted keys, no spaces, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def pack_json(obj: Any) -> bytes:
    return compress(canonical_json(obj))


def unpack_json(blob: bytes) -> Any:
    return loads(decompress(blob), "JSON part")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON may carry")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 parses as inf
        raise ValueError(f"{text[:40]} is not a finite number")
    return value


def loads(data: bytes | str, what: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse JSON that came from elsewhere, or IntegrityError: not JSON, a non-finite number (NaN,
    Infinity, 1e400: Python's json takes them all), or nested deeper than `max_depth` (a deep document
    makes the parser recurse; it is refused before anything walks it)."""
    try:
        obj = json.loads(data, parse_constant=_no_constant, parse_float=_finite_float)
    except RecursionError:
        raise IntegrityError(f"{what} is nested deeper than {max_depth} levels") from None
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError; so is a 5,000-digit int
        raise IntegrityError(f"{what} is not JSON: {str(exc)[:200]}") from exc
    if depth(obj, max_depth) > max_depth:
        raise IntegrityError(f"{what} is nested deeper than {max_depth} levels")
    return obj


def depth(obj: Any, stop: int = MAX_JSON_DEPTH) -> int:
    """Nesting depth of parsed JSON (a scalar is 0, [] is 1), walked without recursion; stops counting
    past `stop`."""
    deepest, todo = 0, [(obj, 1)]
    while todo:
        node, d = todo.pop()
        if isinstance(node, dict):
            node = node.values()
        elif not isinstance(node, list):
            continue
        deepest = max(deepest, d)
        if d > stop:
            return d
        todo.extend((child, d + 1) for child in node if isinstance(child, (dict, list)))
    return deepest


MANIFEST_FIELDS = {
    "wire_version",
    "version",
    "created_at",
    "expires_at",
    "model_version",
    "embedding_dim",
    "user_state",
    "artifacts",
    "popular",
}


def parse_manifest(data: bytes) -> dict[str, Any]:
    """Parse manifest bytes and check its shape (not its signature)."""
    manifest = loads(data, "manifest")
    # The wire version first: an older or newer server's manifest has other fields, and the fix is the app's.
    if isinstance(manifest, dict) and "wire_version" in manifest and manifest["wire_version"] != WIRE_VERSION:
        raise IntegrityError(
            f"manifest wire version {manifest['wire_version']} is not {WIRE_VERSION}; update the app"
        )
    if not isinstance(manifest, dict) or not MANIFEST_FIELDS <= set(manifest):
        missing = MANIFEST_FIELDS - set(manifest if isinstance(manifest, dict) else {})
        raise IntegrityError(f"manifest lacks fields: {', '.join(sorted(missing))}")
    if manifest["wire_version"] != WIRE_VERSION:
        raise IntegrityError(
            f"manifest wire version {manifest['wire_version']} is not {WIRE_VERSION}; update the app"
        )
    if not _int(manifest["version"]) or manifest["version"] < 1 or manifest["version"] >= 2**32:
        raise IntegrityError("manifest version must be an integer 1 to 2^32 - 1")
    for key in ("created_at", "expires_at"):
        if not isinstance(manifest[key], (int, float)) or isinstance(manifest[key], bool):
            raise IntegrityError(f"manifest {key} must be a number")
    if not isinstance(manifest["model_version"], str) or not 0 < len(manifest["model_version"].encode()) <= 255:
        raise IntegrityError("manifest model_version must be a string of 1-255 bytes")
    if not isinstance(manifest["popular"], list) or not all(
            _int(i) and -(2**31) <= i < 2**31 for i in manifest["popular"]):
        raise IntegrityError("manifest popular must be a list of item ids")
    if not isinstance(manifest["artifacts"], dict):
        raise IntegrityError("manifest artifacts must be an object")
    for name, art in manifest["artifacts"].items():
        if not isinstance(art, dict) or not {"sha256", "length"} <= set(art):
            raise IntegrityError(f"manifest artifact {name!r} lacks sha256 or length")
        if not (isinstance(art["sha256"], str) and len(art["sha256"]) == 64
                and all(c in "0123456789abcdef" for c in art["sha256"])) or not _int(art["length"]) or art["length"] < 0:
            raise IntegrityError(f"manifest artifact {name!r}: sha256 must be 64 lowercase hex, length an integer >= 0")
    return manifest


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --- item entries: one item's vector and metadata, signed on its own (PRI1) ---
#
# Only the items a device's candidate lists (and the popular list) reference are
# sent, each signed on its own (item_message). Vectors travel as f16:
# bench/item_precision.py measured the on-device rerank's agreement with f32.

ITEM_MAGIC = b"PRI2"  # wire 5: PRI1 plus the marketplace's own id
ITEM_SIG_MAGIC = b"PRIS"
ITEM_PRECISIONS = {"f32": 0, "f16": 1, "i8": 2}
ITEM_HEADER = struct.Struct("<4siBHfB")  # magic, item id, precision, dim, price, in_stock
MAX_ITEM_TEXT = 255  # bytes of UTF-8 title or category; longer ones are cut at a character boundary
MAX_EXTERNAL_ID = 255  # bytes of UTF-8: the schema allows 64 characters, at most 4 bytes each
# One raw entry: 19 B of header, a 65,535-dim f32 vector, the id and two 255 B texts at most; anything
# longer is hostile.
MAX_ITEM_ENTRY_BYTES = ITEM_HEADER.size + 4 * 65535 + 3 * (1 + MAX_ITEM_TEXT)


def _short_text(text: str) -> bytes:
    raw = str(text).encode()
    return raw if len(raw) <= MAX_ITEM_TEXT else raw[:MAX_ITEM_TEXT].decode(errors="ignore").encode()


def quantize_vector(vector: np.ndarray, precision: str) -> bytes:
    """The vector's bytes in `precision`: f32, f16, or i8 (f32 scale = max|v| / 127, then dim x i8)."""
    v = np.asarray(vector, dtype=np.float32).reshape(-1)
    if precision == "f32":
        return v.astype("<f4").tobytes()
    if precision == "f16":
        return v.astype("<f2").tobytes()
    if precision == "i8":
        scale = np.float32(float(np.abs(v).max()) / 127.0 if len(v) else 0.0)
        codes = np.zeros(len(v), np.int8) if scale == 0 else np.clip(np.round(v / scale), -127, 127).astype(np.int8)
        return struct.pack("<f", scale) + codes.tobytes()
    raise ValidationError("precision", f"must be one of {sorted(ITEM_PRECISIONS)}")


def dequantize_vector(data: bytes, precision: str, dim: int) -> np.ndarray:
    """float32 (dim,) from quantize_vector's bytes; IntegrityError when the length does not match."""
    size = {"f32": 4 * dim, "f16": 2 * dim, "i8": 4 + dim}[precision]
    if len(data) != size:
        raise IntegrityError(f"item vector: {len(data)} bytes, {size} expected for {precision} x {dim}")
    if precision == "f32":
        return np.frombuffer(data, dtype="<f4").astype(np.float32)
    if precision == "f16":
        return np.frombuffer(data, dtype="<f2").astype(np.float32)
    (scale,) = struct.unpack_from("<f", data)
    return (np.frombuffer(data, dtype=np.int8, offset=4).astype(np.float32) * np.float32(scale)).astype(np.float32)


def pack_item_entry(item_id: int, vector: np.ndarray, title: str = "", category: str = "", price: float = 0.0,
                    in_stock: bool = True, precision: str = "f16", external_id: str = "") -> bytes:
    """One item, uncompressed: what item signatures are computed over.

    Layout: magic "PRI2", i32 item index, u8 precision (0 f32, 1 f16, 2 i8), u16 dim,
    f32 price, u8 in_stock, the vector (f32/f16: dim values; i8: f32 scale then
    dim x i8), u8 id length + UTF-8 external id (the marketplace's own; empty means
    the index's decimal digits), u8 title length + UTF-8 title, u8 category length +
    UTF-8 category. The external id is never cut: it is how the app names the product.
    """
    if not -(2**31) <= int(item_id) < 2**31:
        raise ValidationError("item_id", "must fit in a signed 32-bit integer")
    ext = str(external_id).encode()
    if len(ext) > MAX_EXTERNAL_ID:
        raise ValidationError("external_id", f"must be at most {MAX_EXTERNAL_ID} bytes of UTF-8")
    if precision not in ITEM_PRECISIONS:
        raise ValidationError("precision", f"must be one of {sorted(ITEM_PRECISIONS)}")
    vec = np.asarray(vector, dtype=np.float32).reshape(-1)
    if not 0 < len(vec) < 2**16 or not np.all(np.isfinite(vec)):
        raise ValidationError("vector", "must have 1-65535 finite values")
    t, c = _short_text(title), _short_text(category)
    return (ITEM_HEADER.pack(ITEM_MAGIC, int(item_id), ITEM_PRECISIONS[precision], len(vec), float(price),
                             1 if in_stock else 0)
            + quantize_vector(vec, precision) + bytes([len(ext)]) + ext + bytes([len(t)]) + t + bytes([len(c)]) + c)


def unpack_item_entry(raw: bytes) -> dict[str, Any]:
    """{item_id, external_id, vector (float32), title, category, price, in_stock} of a raw PRI2 entry,
    or IntegrityError. `external_id` is the index's digits when the entry carries none."""
    try:
        magic, item_id, prec, dim, price, stock = ITEM_HEADER.unpack_from(raw, 0)
        if magic != ITEM_MAGIC:
            raise IntegrityError("item entry: bad magic")
        names = {v: k for k, v in ITEM_PRECISIONS.items()}
        if prec not in names or dim == 0 or stock > 1:
            raise IntegrityError("item entry: unknown precision, zero dim or bad stock flag")
        off = ITEM_HEADER.size
        size = {"f32": 4 * dim, "f16": 2 * dim, "i8": 4 + dim}[names[prec]]
        vector = dequantize_vector(raw[off : off + size], names[prec], dim)
        off += size
        texts = []
        for _ in range(3):
            n = raw[off]
            if off + 1 + n > len(raw):
                raise IntegrityError("item entry: text runs past the end")
            texts.append(raw[off + 1 : off + 1 + n].decode())
            off += 1 + n
        if off != len(raw):
            raise IntegrityError(f"item entry: {len(raw) - off} trailing bytes")
        if not (np.isfinite(price) and np.all(np.isfinite(vector))):
            raise IntegrityError("item entry: price and vector must be finite")
    except (struct.error, IndexError, UnicodeDecodeError) as exc:
        raise IntegrityError(f"item entry is truncated or malformed: {exc}") from exc
    return {"item_id": int(item_id), "external_id": texts[0] or str(int(item_id)), "vector": vector,
            "title": texts[1], "category": texts[2], "price": float(price), "in_stock": bool(stock)}


def item_message(model_version: str, item_id: int, raw_sha256: bytes) -> bytes:
    """The bytes ed25519 signs for one item entry: "PRIS", u8 len, UTF-8 model version, i32 item id, sha256(raw).

    The model version, not the bundle version: a vector only means something
    under the model that made it, and an entry stays valid (is not re-sent)
    across bundle versions of the same model.
    """
    mv = str(model_version).encode()
    if not 0 < len(mv) <= 255 or len(raw_sha256) != 32 or not -(2**31) <= int(item_id) < 2**31:
        raise ValidationError("item", "model version must be 1-255 bytes, sha256 32 bytes, item id an i32")
    return ITEM_SIG_MAGIC + bytes([len(mv)]) + mv + struct.pack("<i", int(item_id)) + raw_sha256


# --- the answer seal (PRA1): what a sync answer says beyond its signed parts, signed per answer ---
#
# Records are signed per version at publish and entries per model, but three things in an answer are
# only true of this answer: the users' live states (the real-time layer's, newer than any publish),
# which listed users have no record, and which revision of each item entry is current at this version
# (an entry stays signed across versions, so an old one, replayed, or a new one dropped by a proxy,
# verifies on its own). The server signs them together, with the manifest's key, for the version,
# cursor and model of the answer. The states are opaque bytes to the seal: whatever a state holds, the
# seal covers the canonical bytes of the whole block.

NO_ENTRY = bytes(32)  # the digest's stand-in for an item the version has no entry for


def items_digest(item_ids: Iterable[int], entry_sha256: Mapping[int, bytes]) -> bytes:
    """sha256 over each distinct index of `item_ids`, ascending: i32 index, then sha256 of its raw PRI2 entry
    at this version (NO_ENTRY when it has none). A device holding exactly this version's entries of a
    list computes the digest the seal carries for it; one stale, replayed or missing entry changes it."""
    parts = [struct.pack("<i", i) + entry_sha256.get(i, NO_ENTRY) for i in sorted({int(i) for i in item_ids})]
    return sha256_digest(b"".join(parts))


def sealed_block(states: Mapping[str, str], unknown_users: Iterable[str], list_digests: Mapping[str, str],
                 popular_digest: str) -> bytes:
    """The canonical bytes the seal covers, built from the answer's own fields (both sides build them the
    same way): canonical JSON of {"lists", "popular", "states", "unknown_users"}."""
    return canonical_json({"lists": dict(list_digests), "popular": popular_digest, "states": dict(states),
                           "unknown_users": list(unknown_users)})


def seal_message(version: int, cursor: int, model_version: str, block: bytes) -> bytes:
    """The bytes ed25519 signs for one answer: "PRA1", u32 version, u32 cursor, u8 len, UTF-8 model version,
    sha256(block). The cursor ties the block to the request (a block answered to another cursor does not
    verify), the version and model to the manifest the answer carries."""
    mv = str(model_version).encode()
    if not 0 < len(mv) <= 255 or not 0 <= version < 2**32 or not 0 <= cursor < 2**32:
        raise ValidationError("seal", "model version must be 1-255 bytes, version and cursor u32")
    return SEAL_MAGIC + struct.pack("<II", version, cursor) + bytes([len(mv)]) + mv + sha256_digest(block)
