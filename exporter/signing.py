"""ed25519 keys and manifest signatures (the device holds only the public key)."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pocketrank.shared.errors import SignatureError

PRIVATE_NAME = "signing.key"
PUBLIC_NAME = "signing.pub"


def init_keys(directory: Path, overwrite: bool = False) -> Path:
    """Create a key pair in `directory`; the private key file is mode 0600."""
    directory.mkdir(parents=True, exist_ok=True)
    priv_path = directory / PRIVATE_NAME
    if priv_path.exists() and not overwrite:
        return directory / PUBLIC_NAME
    key = Ed25519PrivateKey.generate()
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                            serialization.NoEncryption())
    fd = os.open(priv_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(raw)
    pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    (directory / PUBLIC_NAME).write_text(pub.hex() + "\n")
    return directory / PUBLIC_NAME


def load_private(directory: Path) -> Ed25519PrivateKey:
    try:
        return Ed25519PrivateKey.from_private_bytes((directory / PRIVATE_NAME).read_bytes())
    except FileNotFoundError as exc:
        raise SignatureError(f"no signing key in {directory}; run `pocketrank keys init`") from exc


def public_key_hex(directory: Path) -> str:
    try:
        return (directory / PUBLIC_NAME).read_text().strip()
    except FileNotFoundError as exc:
        raise SignatureError(f"no public key in {directory}; run `pocketrank keys init`") from exc


def sign(manifest_bytes: bytes, directory: Path) -> bytes:
    return load_private(directory).sign(manifest_bytes)
