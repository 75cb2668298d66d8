"""Checksums of the rows the device stores, so damage on disk is seen instead of served.

SQLite checks its own pages only as far as its structure goes: a flipped byte
inside a row's value (a queued event's body, a packed vector, a user state)
reads back as a valid but different value, and becomes a wrong upload, a
changed top 10 or a NaN score. Each such row therefore carries a CRC-32 of its
fields, written in the same statement as they are and checked on every read
that acts on them. CRC-32 and not a cryptographic hash: this detects damage
(flash wear, a torn write, a stray edit), not an attacker with write access to
the file, who could rewrite the checksum too; it costs about 10 us for a
50 KB packed row.
"""

from __future__ import annotations

import logging
import struct
import zlib

log = logging.getLogger("edge_runtime")


def row_crc(*fields: object) -> int:
    """CRC-32 of `fields` in order, each framed by its type and length, so no two rows collide by shifting
    bytes from one field into the next."""
    crc = 0
    for value in fields:
        if value is None:
            data, tag = b"", b"N"
        elif isinstance(value, (bytes, bytearray, memoryview)):
            data, tag = bytes(value), b"B"
        elif isinstance(value, str):
            data, tag = value.encode("utf-8", "surrogatepass"), b"S"
        elif isinstance(value, bool):
            data, tag = struct.pack("<q", int(value)), b"I"
        elif isinstance(value, int):
            data, tag = struct.pack("<q", value), b"I"
        elif isinstance(value, float):
            data, tag = struct.pack("<d", value), b"F"
        else:
            raise TypeError(f"row_crc cannot frame a {type(value).__name__}")
        crc = zlib.crc32(tag + struct.pack("<I", len(data)) + data, crc)
    return crc


# The rows and the fields each checksum covers (schema v5). Version numbers and receive times are left out:
# the sync updates them alone, and a wrong one costs a re-fetch, never a wrong list.

def event_crc(event_id: str, user_id: str, etype: str, body: str | bytes) -> int:
    """A queued event (outbox row): its key columns and the JSON body that is uploaded."""
    return row_crc(event_id, user_id, etype, body)


def packed_crc(user_id: str, ids: bytes, scores: bytes, vectors: bytes, stock: bytes, cats: bytes) -> int:
    """A user's packed candidate row: everything the local rerank reads."""
    return row_crc(user_id, ids or b"", scores or b"", vectors or b"", stock or b"", cats or b"")


def blob_crc(user_id: str, blob: bytes) -> int:
    """A user's held record (the zstd frame the packed row is rebuilt from)."""
    return row_crc(user_id, blob)


def state_crc(user_id: str, s: bytes, w: float, n_events: int) -> int:
    """A user's on-device state."""
    return row_crc(user_id, s, float(w), int(n_events))


DAMAGE_KINDS = ("event", "candidates", "state")


def note_damage(conn, kind: str, key: str | None, detail: str, at: float, body: object = None) -> None:
    """Record damage found on a read (inside the caller's transaction) and log it: status()["damaged"] counts it,
    and a damaged event's bytes are kept in `damaged.body` for whoever investigates."""
    conn.execute("INSERT INTO damaged (kind, key, detail, at, body) VALUES (?, ?, ?, ?, ?)",
                 (kind, None if key is None else str(key), detail, at, body))
    log.warning("device database: %s %r is damaged (%s)", kind, key, detail)
