"""A sync answer's claims beyond its signed parts: its shape, its seal, and the freshness of its item entries.

The manifest, each record and each item entry carry their own signatures (edge_runtime/trust.py,
edge_runtime/items.py). What is only true of one answer is sealed by the server for it (wire 6,
pocketrank.shared.wire.seal_message): the users' live states, which listed users have no record, and a digest of
each list's current item entries. This module checks the envelope's shape before anything reads it (so
a hostile answer is an IntegrityError, never a TypeError), verifies the seal, and compares each list's
digest with the entries the device will hold once the answer applies. docs/sync-protocol.md §6.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from pocketrank.shared import wire
from pocketrank.shared.errors import IntegrityError

from .trust import verify_seal

_HEX64 = re.compile(r"[0-9a-f]{64}")


class StaleEntries(IntegrityError):
    """The entries the device would hold for some lists are not the ones the answer sealed: an entry dropped,
    replayed or frozen on the way (or a held copy that went stale). The device asks once more with cursor 0,
    which carries every entry of its lists; a second mismatch is refused."""

    def __init__(self, users: list[str], popular: bool):
        self.users, self.popular = users, popular
        what = ([f"user(s) {', '.join(users[:5])}{' ...' if len(users) > 5 else ''}"] if users else []) + (
            ["the popular list"] if popular else [])
        super().__init__(f"the item entries of {' and '.join(what)} are not the ones this version's answer sealed: "
                         "an entry was dropped, replayed or held stale; refused")


def _is(value: object, kind: type) -> bool:
    """isinstance, except that a JSON true/false is not an integer."""
    return isinstance(value, kind) and (kind is bool or not isinstance(value, bool))


def check_envelope(body: object) -> dict:
    """`body` if it has the 200 envelope's shape (docs/sync-protocol.md §3), else IntegrityError naming the field.
    Only the shape: signatures, seal and contents are checked by the caller."""
    if not isinstance(body, dict):
        raise IntegrityError("sync answer is not a JSON object")

    def need(field: str, ok: bool, what: str) -> None:
        if not ok:
            raise IntegrityError(f"sync answer's {field} must be {what}")

    for field in ("manifest", "signature"):
        need(field, _is(body.get(field), str), "a string")
    for field in ("version", "cursor"):
        need(field, _is(body.get(field), int) and 0 <= body[field] < 2**32, "an integer 0 to 2^32 - 1")
    need("records", _is(body.get("records"), dict), "an object")
    need("items", body.get("items") is None or _is(body["items"], dict), "an object")
    need("snapshot", _is(body.get("snapshot", False), bool), "true or false")
    arts, states, unknown = (body.get(k) for k in ("artifacts", "states", "unknown_users"))
    need("artifacts", isinstance(arts, dict) and all(_is(v, str) for v in arts.values()), "an object of URLs")
    need("states", isinstance(states, dict) and all(_is(v, str) for v in states.values()),
         "an object of user id -> base64 state")
    need("unknown_users", isinstance(unknown, list) and all(_is(u, str) for u in unknown), "a list of user ids")
    return body


def _check_seal_fields(body: dict) -> None:
    """The seal's own fields (checked after the manifest, so a server of another wire version is told apart
    by the manifest's "update the app", not by a missing field)."""
    lists, popular, seal = body.get("list_digests"), body.get("popular_digest"), body.get("seal")
    if not (isinstance(lists, dict) and all(isinstance(v, str) and _HEX64.fullmatch(v) for v in lists.values())):
        raise IntegrityError("sync answer's list_digests must be an object of user id -> 64 lowercase hex digits")
    if not (isinstance(popular, str) and _HEX64.fullmatch(popular)):
        raise IntegrityError("sync answer's popular_digest must be 64 lowercase hex digits")
    if not isinstance(seal, str):
        raise IntegrityError("sync answer's seal must be a string (base64): an unsealed answer is refused")


def verify_answer_seal(body: dict, public_key: Ed25519PublicKey, version: int, cursor: int, model: str) -> None:
    """The seal over the answer's states, unknown users and digests, for the manifest's version and model and
    the cursor the device asked with (SignatureError otherwise; IntegrityError when a field is malformed)."""
    _check_seal_fields(body)
    block = wire.sealed_block(body["states"], body["unknown_users"], body["list_digests"], body["popular_digest"])
    verify_seal(public_key, version, cursor, model, block, body["seal"])


def check_answered(body: dict, asked: set[str]) -> set[str]:
    """The users the answer is for (its states' keys), after checking it could be true: only users asked for,
    and each one with a record entry or named unknown, never both; a user with a record has its list's digest.
    IntegrityError otherwise (a record dropped on the way is noticed here, not left lagging in silence)."""
    answered = set(body["states"])
    records, unknown = body["records"], set(body["unknown_users"])
    if not answered <= asked:
        raise IntegrityError(f"sync answer is for users not asked for: {sorted(answered - asked)[:5]}")
    for uid in answered:
        if (uid in records) == (uid in unknown):
            raise IntegrityError(f"sync answer has {'both a record and' if uid in records else 'neither a record nor'} "
                                 f"an unknown mark for user {uid!r}")
        if uid in records and uid not in body["list_digests"]:
            raise IntegrityError(f"sync answer has no item digest for user {uid!r}'s list")
    extra = (set(records) | unknown) - answered
    if extra:
        raise IntegrityError(f"sync answer has records or unknown marks for users it has no state for: "
                             f"{sorted(extra)[:5]}")
    return answered


def stale_lists(lists: Mapping[str, Iterable[int]], popular: Iterable[int], body: dict,
                entries: Mapping[int, bytes]) -> tuple[list[str], bool]:
    """(users whose list's digest differs, whether the popular list's does), over `entries`: item index -> sha256
    of the entry the device will hold under the answer's model once it applies (held ones overlaid by the
    answer's). `lists`: each applied or confirmed user's list at the answer's version."""
    stale = sorted(u for u, ids in lists.items()
                   if wire.items_digest(ids, entries).hex() != body["list_digests"].get(u))
    return stale, wire.items_digest(popular, entries).hex() != body["popular_digest"]
