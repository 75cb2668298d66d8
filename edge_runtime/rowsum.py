"""Checksums of the rows the device stores, so damage on disk is seen instead of served.

SQLite checks its own pages only as far as its structure goes: a flipped byte
inside a row's value (a queued event's body, a packed vector, a user state)
reads back as a valid but different value, and becomes a wrong upload, a
changed top 10 or a NaN score. Each such row therefore carries a 64-bit
checksum of its fields (column `checksum`), written in the same statement as
they are and checked on every read that acts on them.

XXH3 (the xxhash package) and not a cryptographic hash: this detects damage
(flash wear, a torn write, a stray edit), not an attacker with write access to
the file, who could rewrite the checksum too. And not zlib's CRC-32: a 50 KB
packed row is checked on every rerank, which CRC-32 made ~60 us slower here
(the local rerank's median is ~0.13 ms); XXH3 costs a few.
"""

from __future__ import annotations

import logging
import struct

import xxhash

log = logging.getLogger("edge_runtime")


def row_sum(*fields: object) -> int:
    """The checksum of `fields` in order, as a signed 64-bit integer (what an SQLite INTEGER holds): the hash of
    each field's type, length and own hash, so no two rows collide by shifting bytes from one field into the
    next. (Hashing each field at once and then their hashes is faster here than one streaming hash.)"""
    parts = []
    for value in fields:
        data: bytes | bytearray | memoryview
        if value is None:
            data, tag = b"", b"N"
        elif isinstance(value, (bytes, bytearray, memoryview)):
            data, tag = value, b"B"  # not copied: a packed row is ~50 KB
        elif isinstance(value, str):
            data, tag = value.encode("utf-8", "surrogatepass"), b"S"
        elif isinstance(value, bool):
            data, tag = struct.pack("<q", int(value)), b"I"
        elif isinstance(value, int):
            data, tag = struct.pack("<q", value), b"I"
        elif isinstance(value, float):
            data, tag = struct.pack("<d", value), b"F"
        else:
            raise TypeError(f"row_sum cannot frame a {type(value).__name__}")
        parts.append(struct.pack("<cIQ", tag, len(data), xxhash.xxh3_64_intdigest(data)))
    digest = xxhash.xxh3_64_intdigest(b"".join(parts))
    return digest - (1 << 64) if digest >= 1 << 63 else digest


# The rows and the fields each checksum covers (schema v5). Version numbers and receive times are left out:
# the sync updates them alone, and a wrong one costs a re-fetch, never a wrong list.

def event_sum(event_id: str, user_id: str, etype: str, body: str | bytes) -> int:
    """A queued event (outbox row): its key columns and the JSON body that is uploaded."""
    return row_sum(event_id, user_id, etype, body)


def packed_sum(user_id: str, ids: bytes, scores: bytes, vectors: bytes, stock: bytes, cats: bytes) -> int:
    """A user's packed candidate row: everything the local rerank reads."""
    return row_sum(user_id, ids or b"", scores or b"", vectors or b"", stock or b"", cats or b"")


def blob_sum(user_id: str, blob: bytes) -> int:
    """A user's held record (the zstd frame the packed row is rebuilt from)."""
    return row_sum(user_id, blob)


def state_sum(user_id: str, s: bytes, w: float, n_events: int) -> int:
    """A user's on-device state."""
    return row_sum(user_id, s, float(w), int(n_events))


DAMAGE_KINDS = ("event", "candidates", "state")


def note_damage(conn, kind: str, key: str | None, detail: str, at: float, body: object = None) -> None:
    """Record damage found on a read (inside the caller's transaction) and log it: status()["damaged"] counts it,
    and a damaged event's bytes are kept in `damaged.body` for whoever investigates."""
    conn.execute("INSERT INTO damaged (kind, key, detail, at, body) VALUES (?, ?, ?, ?, ?)",
                 (kind, None if key is None else str(key), detail, at, body))
    log.warning("device database: %s %r is damaged (%s)", kind, key, detail)
