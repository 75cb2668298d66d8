"""Signed per-item entries (PRI2) and which of them a sync answer carries (docs/sync-protocol.md §5.3).

- At publish, every catalogue item gets a raw PRI2 entry (pocketrank.shared.wire.pack_item_entry,
  f16 vector: bench/item_precision.py measured it within the exporter's int8 parity
  gates) signed over pocketrank.shared.wire.item_message(model version, item id, sha256).
  An entry whose bytes and model did not change keeps its signature and the
  version it last changed at (`changed`), so it is never re-sent to a device
  that already holds it.
- Each answer seals, per listed user and for the popular list, a digest of the list's current
  entries (list_digest; docs/sync-protocol.md §4a, "Freshness"): entries are signed per model,
  not per version, so this is what tells a device that none it holds is stale.
- Items need no history: a device holding every item of a user's list at cursor
  C needs, for that user at V, the items of its list changed after C plus the
  items that entered the list since C (select()). Items leaving every held list
  are dropped by the device itself (edge_runtime/items.to_drop), so removals
  need no message: an item leaving the catalogue leaves every list at the next publish.
"""

from __future__ import annotations

import logging
import math
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pocketrank.shared import wire
from pocketrank.shared.errors import ValidationError
from pocketrank.shared.schemas import MAX_PRICE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ItemEntry:
    raw: bytes  # the PRI2 entry
    sha256: bytes
    sig: bytes  # ed25519 over wire.item_message(model_version, item id, sha256)
    changed: int  # the bundle version this entry (or its model) last changed at


def build_entries(ids: np.ndarray, vectors: np.ndarray, meta: Mapping[int, dict], model_version: str,
                  version: int, sign: Callable[[bytes], bytes], previous: Mapping[int, ItemEntry] | None = None,
                  previous_model: str | None = None, precision: str = "f16") -> dict[int, ItemEntry]:
    """Every item's entry at `version`; entries equal to `previous` ones (same model) keep their signature and `changed`."""
    same_model = previous is not None and previous_model == model_version
    out: dict[int, ItemEntry] = {}
    for item_id, vec in zip(ids, vectors):
        item_id = int(item_id)
        raw = packed_entry(item_id, vec, meta.get(item_id, {}), precision)
        if raw is None:
            continue
        sha = wire.sha256_digest(raw)
        old = previous.get(item_id) if same_model and previous is not None else None  # same_model implies previous
        if old is not None and old.sha256 == sha:
            out[item_id] = old
        else:
            out[item_id] = ItemEntry(raw, sha, sign(wire.item_message(model_version, item_id, sha)), version)
    return out


def packable_price(value) -> float:
    """The price an entry carries: the stored one when it is a number in [0, MAX_PRICE], else 0 (none).

    The API bounds prices at the door, but a store may hold older rows, a file import's or a hand
    edit's; one unpackable price (1e39 overflows the entry's f32) must not stop every publish.
    """
    try:
        price = float(value or 0.0)
    except (TypeError, ValueError, OverflowError):
        return 0.0
    return price if math.isfinite(price) and 0.0 <= price <= MAX_PRICE else 0.0


def packed_entry(item_id: int, vector: np.ndarray, m: Mapping, precision: str = "f16") -> bytes | None:
    """The raw PRI2 entry of one product, or None (logged, naming it) when the product cannot be packed.

    A product that cannot travel (an id or vector the wire cannot carry) is left out of the bundle
    rather than failing the publish of every other product; a device never shows an item it
    holds no entry for.
    """
    price = packable_price(m.get("price"))
    if m.get("price") and price != m.get("price"):
        log.warning("product %.80r: stored price %r is not a number in [0, %g]; its entry carries no price",
                    m.get("item_id", item_id), m.get("price"), MAX_PRICE)
    try:
        return wire.pack_item_entry(item_id, vector, str(m.get("title") or ""), str(m.get("category") or ""),
                                    price, bool(m.get("in_stock", True)), precision,
                                    external_id=str(m.get("item_id") or item_id))
    except (ValidationError, struct.error, OverflowError, ValueError) as exc:
        log.warning("product %.80r (index %d) left out of the bundle: %s", m.get("item_id", item_id), item_id, exc)
        return None


def select(entries: Mapping[int, ItemEntry], now: Iterable[int], before: Iterable[int] | None, cursor: int,
           lacking: Iterable[int] = ()) -> list[int]:
    """Item ids to send for one list (a user's candidates, or the popular list): sorted, known items only.

    `now` is the list at the answer's version, `before` the list the device holds
    at `cursor` (None, or cursor 0: it holds none of them, so all are sent);
    `lacking` the ids the device says it does not hold.
    """
    now = {int(i) for i in now}
    if before is None or cursor == 0:
        want = now
    else:
        held = {int(i) for i in before}
        want = {i for i in now if i not in held or (i in entries and entries[i].changed > cursor)}
    want |= {int(i) for i in lacking}
    return sorted(i for i in want if i in entries)


def list_digest(entries: Mapping[int, ItemEntry], item_ids: Iterable[int]) -> bytes:
    """pocketrank.shared.wire.items_digest of a list (a user's candidates, or the popular list) over this version's
    entries: sealed into each answer, so a device can tell that it holds every entry of the list at its
    current revision (none dropped by a proxy, none replayed from an older revision)."""
    wanted = {int(i) for i in item_ids}
    return wire.items_digest(wanted, {i: entries[i].sha256 for i in wanted if i in entries})


# The bundle's item file (server-side only, never sent whole): per item i32 id, u32 changed,
# 64 B signature, u32 length, the raw entry. Reread by the next publish to keep unchanged signatures.
ITEMS_FILE = "items.pri"
_ROW = struct.Struct("<iI64sI")


def save(path: Path, entries: Mapping[int, ItemEntry]) -> None:
    parts = []
    for item_id in sorted(entries):
        e = entries[item_id]
        parts.append(_ROW.pack(item_id, e.changed, e.sig, len(e.raw)) + e.raw)
    path.write_bytes(b"".join(parts))


def load(path: Path) -> dict[int, ItemEntry]:
    """The entries of a bundle's item file; {} when there is none (a bundle published before item entries)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    out, off = {}, 0
    while off < len(data):
        item_id, changed, sig, n = _ROW.unpack_from(data, off)
        off += _ROW.size
        raw = data[off : off + n]
        off += n
        out[item_id] = ItemEntry(raw, wire.sha256_digest(raw), sig, changed)
    return out
