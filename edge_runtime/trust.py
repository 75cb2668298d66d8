"""Manifest verification: signature, rollback and expiry (TUF's lessons, small)."""

from __future__ import annotations

import base64
import binascii
import time

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from shared.errors import SignatureError
from shared.wire import parse_manifest


def load_public_key(hex_key: str) -> Ed25519PublicKey:
    try:
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(hex_key.strip()))
    except ValueError as exc:
        raise SignatureError("public key must be 32 bytes of hex (the server's keys/signing.pub)") from exc


def verify_manifest(manifest_bytes: bytes, signature_b64: str, public_key: Ed25519PublicKey,
                    held_version: int, now: float | None = None) -> dict:
    """Return the manifest if it is signed by `public_key`, newer than held, and unexpired."""
    if not signature_b64:
        raise SignatureError("the bundle is unsigned; refusing it")
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
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
        raise SignatureError(f"bundle version {manifest['version']} expired; the server must republish")
    return manifest
