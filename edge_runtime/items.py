"""Item entries on the device: verify each signed PRI2 entry before anything is applied.

Issue 7's last part replaces the whole-catalogue `items` and `catalog`
artifacts with one signed entry per item that the device's candidate lists (or
the cold-start popular list) reference. This module holds the device's pure
checks: each entry's signature over pocketrank.shared.wire.item_message (the manifest's
model version, the item index, sha256 of the raw entry), its layout, its dim,
its external id (the marketplace's own product id, wire 5), and the caps; and
which items the held lists reference. edge_runtime/sync.py applies what passes,
in the same transaction as the records.

Ids (wire 5): packed records, the manifest's `popular` list and the keys of the
answer's `items` map name a product by the dense int32 index the server's store
assigned it (compact, and never reused or changed); the entry, signed, maps that
index to the product's own string id, which is the only id the app ever sees.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from pocketrank.shared import wire
from pocketrank.shared.errors import IntegrityError, SignatureError, ValidationError
from pocketrank.shared.schemas import check_item_id

# 50 users x 200 candidates, plus the popular list, fit with room to spare.
MAX_ITEM_ENTRIES = 20_000


@dataclass(frozen=True)
class HeldItem:
    """One verified item entry, ready for the device's items table."""

    item_id: int  # the index: the key of records, `popular` and the device's packed rows
    external_id: str  # the marketplace's own id: how the app names the product
    sha256: bytes  # of the raw entry: what the signature covers and what the device compares to skip re-sends
    vector: np.ndarray  # float32 (dim,)
    title: str
    category: str
    price: float
    in_stock: bool


def verify_items(entries: object, model_version: str, dim: int, public_key: Ed25519PublicKey,
                 max_entries: int = MAX_ITEM_ENTRIES, held: Mapping[str, int] | None = None) -> dict[int, HeldItem]:
    """The answer's `items` ({"<index>": {"sig": b64, "data": b64 raw PRI2}}), every one verified, or an error;
    keyed by index.

    All or nothing: one bad entry refuses the whole answer (SignatureError for a
    signature that does not verify under this model version, IntegrityError for
    anything malformed), so the caller keeps its previous state. An entry's
    external id must be a valid product id (pocketrank.shared.schemas.check_item_id; an
    empty one is refused), and name one product only: two entries of the answer,
    or an entry and one of the `held` entries that stay (external id -> index),
    with the same external id and different indexes are refused (IntegrityError).
    """
    if entries is None:
        return {}
    if not isinstance(entries, dict):
        raise IntegrityError("sync answer's items must be an object of item index -> entry")
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
        external_id = _external_id(raw, parsed)
        out[item_id] = HeldItem(item_id, external_id, sha, parsed["vector"], parsed["title"], parsed["category"],
                                parsed["price"], parsed["in_stock"])
    _check_unique(out, held or {})
    return out


def _external_id(raw: bytes, parsed: dict) -> str:
    """The entry's external id, checked: present (unpack_item_entry reads an empty one as the index's digits;
    a wire 5 publisher always writes the id, so an empty one is refused) and a valid product id."""
    item_id = parsed["item_id"]
    _, _, prec, dim, _, _ = wire.ITEM_HEADER.unpack_from(raw, 0)
    at = wire.ITEM_HEADER.size + {0: 4 * dim, 1: 2 * dim, 2: 4 + dim}[prec]  # unpack_item_entry checked the layout
    if raw[at] == 0:
        raise IntegrityError(f"item entry {item_id} carries no external id (the product's own id)")
    try:
        return check_item_id(parsed["external_id"], "external_id")
    except ValidationError as exc:
        raise IntegrityError(f"item entry {item_id}: external id {parsed['external_id']!r} {exc.message}") from exc


def _check_unique(entries: dict[int, HeldItem], held: Mapping[str, int]) -> None:
    """One product id, one index: among the answer's entries, and against the held entries that stay
    (`held`: external id -> index of the entries this answer neither replaces nor drops)."""
    seen: dict[str, int] = {}
    for index, it in sorted(entries.items()):
        other = seen.setdefault(it.external_id, index)
        if other == index:
            other = held.get(it.external_id, index)
            if other in entries:  # that held entry is replaced by this answer's
                other = index
        if other != index:
            raise IntegrityError(f"item entry {index} names product {it.external_id!r}, which item {other} "
                                 "names too: one product id must map to one index")


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
