"""Manifest, record and answer-seal verification: signatures, rollback and expiry (TUF's lessons, small)."""

from __future__ import annotations

import base64
import binascii
import time
from datetime import datetime, timezone

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from pocketrank.shared.errors import SignatureError, ValidationError
from pocketrank.shared.wire import parse_manifest, record_message, seal_message


def load_public_key(hex_key: str) -> Ed25519PublicKey:
    try:
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(hex_key.strip()))
    except ValueError as exc:
        raise SignatureError("public key must be 32 bytes of hex (the server's keys/signing.pub)") from exc


def verify_manifest(manifest_bytes: bytes, signature_b64: str, public_key: Ed25519PublicKey,
                    held_version: int, now: float | None = None, clock_offset: float | None = None) -> dict:
    """Return the manifest if it is signed by `public_key`, newer than held, and unexpired.

    Expiry is judged by the device's clock. `clock_offset` (the server's clock minus the device's, as the
    last upload measured it: EdgeClient.clock_offset) only shapes the message, so that a device whose clock
    is wrong is told so instead of blaming the server; an unsigned offset never makes a bundle acceptable.
    """
    if not signature_b64:
        raise SignatureError("the bundle is unsigned; refusing it")
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise SignatureError("the bundle signature is not base64; refusing it") from exc
    try:
        public_key.verify(signature, manifest_bytes)
    except InvalidSignature as exc:
        raise SignatureError("the bundle signature does not match the manifest: tampered or wrong key") from exc
    manifest = parse_manifest(manifest_bytes)
    if manifest["version"] <= held_version:
        raise SignatureError(
            f"bundle version {manifest['version']} is not newer than the held {held_version}: rollback refused"
        )
    now = time.time() if now is None else now
    if manifest["expires_at"] < now:
        raise SignatureError(_expired(manifest, now, clock_offset))
    return manifest


def _expired(manifest: dict, now: float, clock_offset: float | None) -> str:
    def utc(t: float) -> str:
        try:
            return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        except (OverflowError, OSError, ValueError):
            return f"{t:.0f}"

    version, expires = manifest["version"], manifest["expires_at"]
    if clock_offset is not None and now + clock_offset < expires:
        return (f"bundle version {version} looks expired only because the device clock is wrong: it reads "
                f"{utc(now)}, {abs(clock_offset) / 86400:.1f} days ahead of the server's; the bundle is valid until "
                f"{utc(expires)}. Set the device clock right, then sync again")
    return (f"bundle version {version} expired at {utc(expires)} by the device clock ({utc(now)}): if the device "
            "clock is right, the server must republish; if it is wrong, set it right and sync again")


def verify_record(public_key: Ed25519PublicKey, version: int, user_id: str, raw_sha256: bytes, signature: bytes) -> None:
    """Raise SignatureError unless `signature` signs (version, user_id, raw_sha256) as pocketrank.shared.wire.record_message.

    `version` is the verified manifest's: a record signed for another version
    (a replayed or mixed-in list) or for another user does not verify.
    """
    try:
        public_key.verify(signature, record_message(version, user_id, raw_sha256))
    except (InvalidSignature, ValueError) as exc:
        raise SignatureError(f"the record signature of user {user_id!r} does not verify for bundle {version}: "
                             "tampered, or signed for another version or user") from exc


def verify_seal(public_key: Ed25519PublicKey, version: int, cursor: int, model_version: str, block: bytes,
                seal_b64: object) -> None:
    """Raise SignatureError unless `seal_b64` signs pocketrank.shared.wire.seal_message(version, cursor, model, block).

    `version` and `model_version` are the verified manifest's, `cursor` the one the device asked with, and
    `block` pocketrank.shared.wire.sealed_block of the answer's states, unknown users and list digests: a state forged
    or taken from another answer, a user marked unknown, or a list digest changed does not verify."""
    try:
        signature = base64.b64decode(seal_b64, validate=True)  # type: ignore[arg-type]  # checked by the except
        public_key.verify(signature, seal_message(version, cursor, model_version, block))
    except (InvalidSignature, ValueError, TypeError, binascii.Error, ValidationError) as exc:
        raise SignatureError(f"the answer's seal does not verify for bundle {version}, cursor {cursor}: its "
                             "states, unknown users or item digests were tampered with, or belong to another "
                             "answer") from exc
