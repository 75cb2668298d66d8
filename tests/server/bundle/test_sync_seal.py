"""The sync answer's seal (wire 6), as the real Flask app builds it: what it covers and what it binds to."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from pocketrank.shared import wire

USER = "196"


def _verify(public_key: str, body: dict, cursor: int) -> None:
    model = json.loads(base64.b64decode(body["manifest"]))["model_version"]
    block = wire.sealed_block(body["states"], body["unknown_users"], body["list_digests"], body["popular_digest"])
    key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key))
    key.verify(base64.b64decode(body["seal"]), wire.seal_message(body["version"], cursor, model, block))


def test_the_seal_covers_states_unknown_users_and_each_lists_current_entries(api, public_key):
    body = api.get(f"/v1/sync?cursor=0&users={USER},nobody").get_json()
    _verify(public_key, body, 0)
    assert body["unknown_users"] == ["nobody"] and set(body["list_digests"]) == {USER}
    # A first sync carries every entry of the list and of popular: the digests are theirs.
    shas = {int(k): hashlib.sha256(base64.b64decode(e["data"])).digest() for k, e in body["items"].items()}
    ids = wire.unpack_candidates(base64.b64decode(body["records"][USER]["data"]))[0].tolist()
    assert body["list_digests"][USER] == wire.items_digest(ids, shas).hex()
    popular = json.loads(base64.b64decode(body["manifest"]))["popular"]
    assert body["popular_digest"] == wire.items_digest(popular, shas).hex()
    # One changed state, or the same block for another cursor, no longer verifies.
    forged = {**body, "states": {**body["states"], USER: body["states"]["nobody"]}}
    with pytest.raises(InvalidSignature):
        _verify(public_key, forged, 0)
    with pytest.raises(InvalidSignature):
        _verify(public_key, body, 1)


def test_answers_to_another_cursor_are_sealed_for_it(api, public_key):
    first = api.get(f"/v1/sync?cursor=0&users={USER}").get_json()
    again = api.get(f"/v1/sync?cursor=1&users={USER}&without={USER}").get_json()  # never a 304
    _verify(public_key, again, 1)
    assert again["seal"] != first["seal"] and again["list_digests"] == first["list_digests"]


def test_no_signing_key_is_a_503_not_an_unsealed_answer(api, home):
    (home / "keys" / "signing.key").unlink()
    resp = api.get(f"/v1/sync?cursor=0&users={USER}")
    assert resp.status_code == 503 and "signing key" in resp.get_json()["message"]
