"""Wire format v1: packed binary records, zstandard frames and the manifest.

Documented for other clients in docs/wire-format.md; this module is the
reference implementation. All integers are little-endian.
"""

from __future__ import annotations

import hashlib
import json
import struct
from typing import Any, Mapping

import numpy as np
import zstandard

from .errors import IntegrityError, ValidationError
from .features import UserState

WIRE_VERSION = 1
ZSTD_LEVEL = 3
# A decompressed part larger than this is refused: protects the device from
# a zstd bomb in a corrupted or hostile frame.
MAX_DECOMPRESSED = 64 * 1024 * 1024

CANDIDATES_MAGIC = b"PRC1"
VECTORS_MAGIC = b"PRV1"
USER_INDEX_MAGIC = b"PRU1"
STATE_MAGIC = b"PRS1"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def compress(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True).compress(data)


def decompress(data: bytes) -> bytes:
    # max_output_size is ignored when the frame header declares its size, so
    # the declared size is checked first and undeclared sizes are read bounded.
    try:
        declared = zstandard.frame_content_size(data)
        if declared > MAX_DECOMPRESSED:
            raise IntegrityError(f"zstandard frame declares {declared} bytes, above {MAX_DECOMPRESSED}")
        if declared >= 0:
            return zstandard.ZstdDecompressor().decompress(data)
        with zstandard.ZstdDecompressor().stream_reader(data) as reader:
            out = reader.read(MAX_DECOMPRESSED + 1)
    except zstandard.ZstdError as exc:
        raise IntegrityError(f"zstandard frame could not be decoded: {exc}") from exc
    if len(out) > MAX_DECOMPRESSED:
        raise IntegrityError(f"zstandard frame inflates past {MAX_DECOMPRESSED} bytes")
    return out


def check_digest(data: bytes, sha256: str, length: int, what: str) -> None:
    """Raise IntegrityError unless data has exactly the promised length and sha256."""
    if len(data) != length:
        raise IntegrityError(f"{what}: expected {length} bytes, got {len(data)}; retry the download")
    if sha256_hex(data) != sha256:
        raise IntegrityError(f"{what}: sha256 mismatch; the bytes were corrupted or tampered with")


# --- candidate record: one user's ranked candidates plus their user state ---


def pack_candidates(item_ids: np.ndarray, scores: np.ndarray, state: UserState) -> bytes:
    """One user's record, zstd-compressed.

    Layout: magic "PRC1", u32 n, n x i32 item ids (rank order), n x f16 scores,
    u16 dim, dim x f32 state S, f32 state W, u32 state event count.
    """
    ids = np.asarray(item_ids, dtype="<i4")
    sc = np.asarray(scores, dtype="<f2")
    if ids.shape != sc.shape or ids.ndim != 1:
        raise ValidationError("candidates", "item_ids and scores must be 1-d and the same length")
    s = np.asarray(state.s, dtype="<f4")
    raw = b"".join(
        [
            CANDIDATES_MAGIC,
            struct.pack("<I", len(ids)),
            ids.tobytes(),
            sc.tobytes(),
            struct.pack("<H", len(s)),
            s.tobytes(),
            struct.pack("<fI", state.w, state.n_events),
        ]
    )
    return compress(raw)


def unpack_candidates(blob: bytes) -> tuple[np.ndarray, np.ndarray, UserState]:
    raw = decompress(blob)
    try:
        if raw[:4] != CANDIDATES_MAGIC:
            raise IntegrityError("candidate record: bad magic")
        (n,) = struct.unpack_from("<I", raw, 4)
        off = 8
        ids = np.frombuffer(raw, dtype="<i4", count=n, offset=off).astype(np.int64)
        off += 4 * n
        scores = np.frombuffer(raw, dtype="<f2", count=n, offset=off).astype(np.float32)
        off += 2 * n
        (dim,) = struct.unpack_from("<H", raw, off)
        off += 2
        s = np.frombuffer(raw, dtype="<f4", count=dim, offset=off).astype(np.float32)
        off += 4 * dim
        w, n_events = struct.unpack_from("<fI", raw, off)
        if off + 8 != len(raw):
            raise IntegrityError("candidate record: trailing bytes")
    except (struct.error, ValueError) as exc:
        raise IntegrityError(f"candidate record is truncated: {exc}") from exc
    return ids, scores, UserState(s, float(w), int(n_events))


# --- a live user state, pushed beside the bundle on every sync ---


def pack_state(state: UserState) -> bytes:
    """Layout (uncompressed, 14 + 4*dim bytes): magic "PRS1", u16 dim, dim x f32 S, f32 W, u32 n."""
    s = np.asarray(state.s, dtype="<f4")
    return STATE_MAGIC + struct.pack("<H", len(s)) + s.tobytes() + struct.pack("<fI", state.w, state.n_events)


def unpack_state(raw: bytes) -> UserState:
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
    return UserState(s, float(w), int(n))


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


# --- user index: which record belongs to which user, with its digest ---


def pack_user_index(digests: Mapping[str, str]) -> bytes:
    """Layout: magic "PRU1", u32 n, then n x (u8 len, utf-8 user_id, 32-byte sha256)."""
    parts = [USER_INDEX_MAGIC, struct.pack("<I", len(digests))]
    for user_id in sorted(digests):
        uid = user_id.encode()
        parts.append(struct.pack("<B", len(uid)) + uid + bytes.fromhex(digests[user_id]))
    return compress(b"".join(parts))


def unpack_user_index(blob: bytes) -> dict[str, str]:
    raw = decompress(blob)
    try:
        if raw[:4] != USER_INDEX_MAGIC:
            raise IntegrityError("user index: bad magic")
        (n,) = struct.unpack_from("<I", raw, 4)
        off, out = 8, {}
        for _ in range(n):
            (ln,) = struct.unpack_from("<B", raw, off)
            uid = raw[off + 1 : off + 1 + ln].decode()
            digest = raw[off + 1 + ln : off + 33 + ln]
            if len(digest) != 32:
                raise IntegrityError("user index: truncated digest")
            out[uid] = digest.hex()
            off += 33 + ln
    except (struct.error, UnicodeDecodeError) as exc:
        raise IntegrityError(f"user index is truncated: {exc}") from exc
    return out


# --- item metadata and manifest: canonical JSON ---


def canonical_json(obj: Any) -> bytes:
    """The exact bytes that are hashed and signed: sorted keys, no spaces, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def pack_json(obj: Any) -> bytes:
    return compress(canonical_json(obj))


def unpack_json(blob: bytes) -> Any:
    try:
        return json.loads(decompress(blob))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IntegrityError(f"JSON part could not be decoded: {exc}") from exc


MANIFEST_FIELDS = {
    "wire_version",
    "version",
    "created_at",
    "expires_at",
    "model_version",
    "embedding_dim",
    "user_state",
    "artifacts",
}


def parse_manifest(data: bytes) -> dict[str, Any]:
    """Parse manifest bytes and check its shape (not its signature)."""
    try:
        manifest = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IntegrityError(f"manifest is not JSON: {exc}") from exc
    if not isinstance(manifest, dict) or not MANIFEST_FIELDS <= set(manifest):
        missing = MANIFEST_FIELDS - set(manifest if isinstance(manifest, dict) else {})
        raise IntegrityError(f"manifest lacks fields: {', '.join(sorted(missing))}")
    if manifest["wire_version"] != WIRE_VERSION:
        raise IntegrityError(
            f"manifest wire version {manifest['wire_version']} is not {WIRE_VERSION}; update the app"
        )
    for name, art in manifest["artifacts"].items():
        if not isinstance(art, dict) or not {"sha256", "length"} <= set(art):
            raise IntegrityError(f"manifest artifact {name!r} lacks sha256 or length")
    return manifest
