import base64

import pytest

from pocketrank.edge_runtime.trust import load_public_key, verify_manifest
from pocketrank.exporter.signing import init_keys, public_key_hex, sign
from pocketrank.shared.errors import SignatureError
from pocketrank.shared.wire import WIRE_VERSION, canonical_json

MANIFEST = {"wire_version": WIRE_VERSION, "version": 3, "created_at": 0, "expires_at": 2e9, "model_version": "m",
            "embedding_dim": 64, "user_state": {}, "artifacts": {}, "popular": []}


def test_keys_are_made_once_and_the_private_key_is_private(tmp_path):
    pub = init_keys(tmp_path)
    first = pub.read_text()
    assert init_keys(tmp_path).read_text() == first  # not overwritten by accident
    assert (tmp_path / "signing.key").stat().st_mode & 0o077 == 0
    assert init_keys(tmp_path, overwrite=True).read_text() != first


def test_sign_and_verify_and_refuse(tmp_path):
    init_keys(tmp_path)
    key = load_public_key(public_key_hex(tmp_path))
    body = canonical_json(MANIFEST)
    sig = base64.b64encode(sign(body, tmp_path)).decode()
    assert verify_manifest(body, sig, key, held_version=2, now=1e9)["version"] == 3
    with pytest.raises(SignatureError, match="unsigned"):
        verify_manifest(body, "", key, 2)
    with pytest.raises(SignatureError, match="tampered"):
        verify_manifest(body.replace(b'"version":3', b'"version":4'), sig, key, 2)
    with pytest.raises(SignatureError, match="rollback"):
        verify_manifest(body, sig, key, held_version=3, now=1e9)
    with pytest.raises(SignatureError, match="expired"):
        verify_manifest(body, sig, key, held_version=2, now=3e9)
    other = tmp_path / "other"
    init_keys(other)
    with pytest.raises(SignatureError, match="wrong key"):
        verify_manifest(body, sig, load_public_key(public_key_hex(other)), 2)
    with pytest.raises(SignatureError, match="32 bytes"):
        load_public_key("abcd")
