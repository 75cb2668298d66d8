"""Item entries on the device: verify each signed PRI1 entry before anything is applied.

Issue 7's last part replaces the whole-catalogue `items` and `catalog`
artifacts with one signed entry per item that the device's candidate lists (or
the cold-start popular list) reference. This module holds the device's pure
checks: each entry's signature over shared.wire.item_message (the manifest's
model version, the item id, sha256 of the raw entry), its layout, its dim, and
the caps; and which items the held lists reference. edge_runtime/sync.py
applies what passes, in the same transaction as the records.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import Iterable

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from shared import wire
from shared.errors import IntegrityError, SignatureError

# 50 users x 200 candidates, plus the popular list, fit with room to spare.
MAX_ITEM_ENTRIES = 20_000


@dataclass(frozen=True)
class HeldItem:
    """One verified item entry, ready for the device's items table."""

    item_id: int
    sha256: bytes  # of the raw entry: what the signature covers and what the device compares to skip re-sends
    vector: np.ndarray  # float32 (dim,)
    title: str
    category: str
    price: float
    in_stock: bool


def verify_items(entries: object, model_version: str, dim: int, public_key: Ed25519PublicKey,
                 max_entries: int = MAX_ITEM_ENTRIES) -> dict[int, HeldItem]:
    """The answer's `items` ({"<id>": {"sig": b64, "data": b64 raw PRI1}}), every one verified, or an error.

    All or nothing: one bad entry refuses the whole answer (SignatureError for a
    signature that does not verify under this model version, IntegrityError for
    anything malformed), so the caller keeps its previous state.
    """
    if entries is None:
        return {}
    if not isinstance(entries, dict):
        raise IntegrityError("sync answer's items must be an object of item id -> entry")
    if len(entries) > max_entries:
        raise IntegrityError(f"sync answer carries {len(entries)} item entries, above the cap of {max_entries}")
    out: dict[int, HeldItem] = {}
    for key, e in entries.items():
        try:
            item_id = int(key)
            if str(item_id) != key:
                raise ValueError("not a canonical integer")
            sig = base64.b64decode(e["sig"], validate=True)
            data = e["data"]
            if not isinstance(data, str) or len(data) > 4 * (wire.MAX_ITEM_ENTRY_BYTES // 3 + 1):
                raise ValueError(f"data must be base64 of at most {wire.MAX_ITEM_ENTRY_BYTES} bytes")
            raw = base64.b64decode(data, validate=True)
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise IntegrityError(f"item entry {key!r} is malformed: {exc!r}") from exc
        if len(sig) != 64:
            raise IntegrityError(f"item entry {key!r}: sig must be 64 bytes")
        sha = hashlib.sha256(raw).digest()
        try:
            public_key.verify(sig, wire.item_message(model_version, item_id, sha))
        except (InvalidSignature, ValueError) as exc:
            raise SignatureError(f"the signature of item {item_id} does not verify for model {model_version!r}: "
                                 "tampered, or signed for another model or item") from exc
        try:
            parsed = wire.unpack_item_entry(raw)
        except IntegrityError as exc:
            raise IntegrityError(f"item entry {item_id}: {exc}") from exc
        if parsed["item_id"] != item_id:
            raise IntegrityError(f"item entry {item_id} carries item id {parsed['item_id']}")
        if len(parsed["vector"]) != dim:
            raise IntegrityError(f"item entry {item_id} has dim {len(parsed['vector'])}, the manifest says {dim}")
        out[item_id] = HeldItem(item_id, sha, parsed["vector"], parsed["title"], parsed["category"],
                                parsed["price"], parsed["in_stock"])
    return out


def held_lists(rows: Iterable[tuple[str, bytes]]) -> dict[str, set[int]]:
    """Each held user's candidate ids, from (user id, zstd frame of the PRC2 record) rows.

    With the popular list, these are the items the device must hold. A record that no longer
    decodes references nothing: the next sync replaces it (its "same" or delta will not match).
    """
    out: dict[str, set[int]] = {}
    for uid, blob in rows:
        try:
            out[uid] = set(wire.unpack_candidates(blob)[0].tolist())
        except (IntegrityError, TypeError):
            out[uid] = set()
    return out
