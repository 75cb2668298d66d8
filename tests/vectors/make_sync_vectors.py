"""Generate the sync-protocol v2 (wire 6) golden vectors in tests/vectors/sync/*.json.

    cd /work/main && .venv/bin/python tests/vectors/make_sync_vectors.py

Each scenario file is a list of steps a device takes from an empty database
(or from the end of the scenario named in "starts_from"):
the sync it is asked for, every HTTP exchange that sync makes (request path,
query parameters and headers; response status, headers and body bytes), and
the state the device must be in afterwards (or the error it must raise, the
state then being the previous step's). artifacts.json holds the bytes served at
each artifact URL. tests/vectors/test_sync_vectors.py replays them against the
Python client; docs/sync-protocol.md explains every field.

The record entries are built by the server's own code (pocketrank.server.bundle.sync_answer.entry),
signatures with a TEST ONLY ed25519 key derived from a published seed (never
deploy it). The catalogue's products carry the marketplace's own string ids
(external_id below), validated by pocketrank.shared.schemas.validate_item; the item entries
(PRI2) carry them beside the item indexes, which name products everywhere else.
Deterministic: ed25519 signatures are, and zstd/onnx bytes are for fixed
library versions; the test checks that a fresh run gives identical bytes.
Response bodies are canonical JSON (sorted keys, no spaces); a client must not
depend on key order or whitespace, only on the parsed values.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from pocketrank.server.bundle import item_entries  # noqa: E402
from pocketrank.server.bundle.sync_answer import entry as _entry, ids as _ids, raw as _raw, snapshot_reason  # noqa: E402
from pocketrank.server.stores.base import RecordRow  # noqa: E402
from pocketrank.shared import wire  # noqa: E402
from pocketrank.shared.features import DECAY, TYPE_WEIGHTS, UserState  # noqa: E402
from pocketrank.shared.schemas import validate_item  # noqa: E402

OUT = Path(__file__).resolve().parent / "sync"
SEED_TEXT = b"pocketrank sync-protocol v2 test vectors -- TEST ONLY, never deploy"
DIM = 4
N_ITEMS = 240
CREATED_AT = 1767225600.0  # 2026-01-01
EXPIRES_AT = 4102444800.0  # 2100-01-01
NOW = CREATED_AT + 3600.0  # the device's clock in every scenario
MODEL_VERSION = "m20260101-000000-sync00"
CHANGED = 5  # the item whose entry changes at version 2


def external_id(index: int) -> str:
    """Product `index`'s own id: digits that are not its index (MovieLens-style), a SKU with a space
    and leading zeros, or a non-ASCII id, in turn."""
    return (f"{5000 + index}", f"SKU {index:04d}", f"thé-{index}")[index % 3]


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def tiny_ranker() -> bytes:
    """An ONNX ranker with the production signature computing sigmoid(items . user)."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Mul", ["items", "user"], ["prod"]),
         helper.make_node("ReduceSum", ["prod", "axes"], ["dot"], keepdims=0),
         helper.make_node("Sigmoid", ["dot"], ["scores"])],
        "pocketrank_sync_test_ranker",
        [helper.make_tensor_value_info("user", TensorProto.FLOAT, [1, DIM]),
         helper.make_tensor_value_info("items", TensorProto.FLOAT, ["n", DIM])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["n"])],
        initializer=[helper.make_tensor("axes", TensorProto.INT64, [1], [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)],
                              producer_name="pocketrank-sync-vectors", ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


class World:
    """The server side of the scenarios: artifacts, manifests, records and answers."""

    def __init__(self):
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        self.seed = hashlib.sha256(SEED_TEXT).digest()
        self.key = Ed25519PrivateKey.from_private_bytes(self.seed)
        self.pub = self.key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        rng = np.random.default_rng(20260101)
        ids = np.arange(1, N_ITEMS + 1)
        vecs = rng.normal(size=(N_ITEMS, DIM)).astype(np.float32)
        # The products as the marketplace posts them; the store gives product i the index i.
        products = [{"item_id": external_id(int(i)), "title": f"Item {i}", "category": ("a", "b", "c")[i % 3],
                     "price": float(i % 20 + 1), "in_stock": bool(i % 7)} for i in ids]
        meta = {int(i): dataclasses.replace(validate_item(p), item_id=int(i)).to_dict()  # as server/bundle/publish.py
                for i, p in zip(ids, products)}
        self.popular = [1, 2, 3]  # item indexes
        # Item entries (PRI2): every item signed for the model at version 1; at version 2 item CHANGED (in u1's
        # list) changes price, so it is re-signed and sent to a device at cursor 1; the others keep theirs.
        self.entries = {1: item_entries.build_entries(ids, vecs, meta, MODEL_VERSION, 1, self.key.sign)}
        meta2 = {**meta, CHANGED: {**meta[CHANGED], "price": meta[CHANGED]["price"] + 5.0}}
        self.entries[2] = item_entries.build_entries(ids, vecs, meta2, MODEL_VERSION, 2, self.key.sign,
                                                     self.entries[1], MODEL_VERSION)
        self.artifacts = {"ranker": tiny_ranker()}
        self.files = {"ranker": "ranker.int8.onnx"}
        state = UserState(np.array([0.5, -0.25, 1.0, 0.125], dtype=np.float32), 2.5, 7)
        order1 = rng.permutation(200) + 1
        order2 = rng.permutation(200) + 21
        scores = np.linspace(0.99, 0.01, 200)
        changed = order1.copy()
        changed[[17, 117]] = [201, 202]  # 1% of u1's list replaced in version 2
        self.raw = {
            ("u1", 1): wire.pack_candidates_raw(order1, scores),
            ("u2", 1): wire.pack_candidates_raw(order2, scores),
            ("u1", 2): wire.pack_candidates_raw(changed, scores),
            ("u2", 4): wire.pack_candidates_raw(order2[::-1].copy(), scores),
        }
        self.states = {"u1": state, "u2": UserState(np.zeros(DIM, dtype=np.float32), 0.0, 0)}

    def items(self, version: int) -> dict[int, item_entries.ItemEntry]:
        """The entries current at `version`."""
        return self.entries[max(v for v in self.entries if v <= version)]

    def record_at(self, uid: str, version: int) -> RecordRow | None:
        """The change log: the newest row at or before `version`."""
        vs = [v for (u, v) in self.raw if u == uid and v <= version]
        if not vs:
            return None
        raw = self.raw[(uid, max(vs))]
        digest = hashlib.sha256(raw).digest()
        return RecordRow(max(vs), wire.compress(raw), digest, self.sign(max(vs), uid, digest))

    def sign(self, version: int, uid: str, digest: bytes) -> bytes:
        return self.key.sign(wire.record_message(version, uid, digest))

    def manifest(self, version: int, expires_at: float = EXPIRES_AT) -> tuple[bytes, str]:
        body = wire.canonical_json({
            "wire_version": wire.WIRE_VERSION, "version": version, "created_at": CREATED_AT,
            "expires_at": expires_at, "model_version": MODEL_VERSION, "embedding_dim": DIM,
            "user_state": {"decay": DECAY, "type_weights": dict(TYPE_WEIGHTS)},
            "popular": self.popular, "items": {"count": len(self.items(version)), "precision": "f16"},
            "artifacts": {k: {"file": self.files[k], "sha256": sha(b), "length": len(b)}
                          for k, b in self.artifacts.items()},
            "model": {"opset": 18, "exporter": "test vector (onnx.helper)", "quantization": "none", "parity": {}},
        })
        return body, b64(self.key.sign(body))

    def answer(self, version: int, cursor: int, users: list[str], history_from: int = 1,
               expires_at: float = EXPIRES_AT, without: tuple[str, ...] = ()) -> dict:
        """What GET /v1/sync answers (server/bundle/sync_answer.py), for the users that exist in `version`."""
        if cursor >= version:  # only the users the device holds nothing for need an answer
            users = sorted(without)
        reason = snapshot_reason(cursor, history_from, version)
        items = self.items(version)
        records, send, lists = {}, set(), {}
        for uid in users:
            row = self.record_at(uid, version)
            if row is None:
                continue
            sig = self.sign(version, uid, row.sha256)
            held = self.record_at(uid, cursor) if reason is None and uid not in without else None
            raw, held_raw = _raw(row), _raw(held) if held else None
            records[uid] = _entry(row, sig, held, raw, held_raw)
            send.update(item_entries.select(items, _ids(raw), _ids(held_raw) if held else None,
                                            cursor if held else 0))
            lists[uid] = item_entries.list_digest(items, _ids(raw)).hex()
        pop_cursor = 0 if reason is not None else min(cursor, version)
        send.update(item_entries.select(items, self.popular, self.popular if pop_cursor else None, pop_cursor))
        manifest, signature = self.manifest(version, expires_at)
        body = {"version": version, "cursor": cursor, "snapshot": reason is not None, "snapshot_reason": reason,
                "history_from": history_from, "manifest": b64(manifest), "signature": signature,
                "items": {str(i): {"data": b64(items[i].raw), "sig": b64(items[i].sig)} for i in sorted(send)},
                "records": records, "unknown_users": [u for u in users if u not in records],
                "states": {u: b64(wire.pack_state(self.states.get(u, UserState.empty(DIM)))) for u in users},
                "list_digests": lists, "popular_digest": item_entries.list_digest(items, self.popular).hex(),
                "artifacts": {k: f"/v1/artifacts/{version}/{self.files[k]}" for k in sorted(self.artifacts)}}
        return self.seal(body)

    def seal(self, body: dict, cursor: int | None = None) -> dict:
        """The answer's seal (wire 6) over its states, unknown users and digests, as the server signs it; after
        an edit, sealing again makes a tampered answer that only the server could have sent."""
        block = wire.sealed_block(body["states"], body["unknown_users"], body["list_digests"],
                                  body["popular_digest"])
        message = wire.seal_message(body["version"], body["cursor"] if cursor is None else cursor, MODEL_VERSION,
                                    block)
        return {**body, "seal": b64(self.key.sign(message))}


def exchange(params: dict, body: dict | None, headers: dict | None = None, status: int = 200,
             etag: str | None = None) -> dict:
    raw = wire.canonical_json(body) if body is not None else b""
    return {"request": {"path": "/v1/sync", "params": params, "headers": headers or {}},
            "response": {"status": status, "headers": {"ETag": etag or f'"v{body["version"]}"'},
                         "body_base64": b64(raw), "body": body}}


def state(world: World, version: int, held: dict[str, int], unknown: list[str]) -> dict:
    """The applied state: bundle version, and per user the record held and the version it is confirmed at."""
    recs = {}
    for uid, at in held.items():
        row = world.record_at(uid, at)
        raw = wire.decompress(row.blob)
        ids, _ = wire.unpack_candidates_raw(raw)
        recs[uid] = {"confirmed_version": at, "payload_sha256": sha(raw), "item_ids": ids.tolist()}
    # The items held: those the held lists and the popular list reference, each at its entry's sha256.
    items = set(world.popular).union(*(r["item_ids"] for r in recs.values()))
    return {"bundle_version": version, "records": recs, "unknown_users": unknown,
            "artifacts": {k: sha(b) for k, b in world.artifacts.items()},
            "items": {str(i): world.items(version)[i].sha256.hex() for i in sorted(items)}}


def result(version, changed=True, updated=(), delta=(), unchanged=(), unknown=(), snapshot=False) -> dict:
    return {"version": version, "changed": changed, "users_updated": sorted(updated), "users_delta": sorted(delta),
            "users_unchanged": sorted(unchanged), "unknown_users": sorted(unknown), "snapshot": snapshot}


def scenarios(w: World) -> dict[str, dict]:
    users = ["gone", "u1", "u2"]
    first = {"sync": users,
             "exchanges": [exchange({"cursor": "0", "users": "gone,u1,u2"}, w.answer(1, 0, users))],
             "expect": {"result": result(1, updated=["u1", "u2"], unknown=["gone"], snapshot=True),
                        "state": state(w, 1, {"u1": 1, "u2": 1}, ["gone"])}}
    # Users unknown at the held version are asked with the held cursor too: the server has no record of
    # theirs at that cursor, so it can only answer them whole, or unknown again.
    second = lambda body: {  # noqa: E731  (the v1 -> v2 sync, with the answer given)
        "sync": users, "exchanges": [exchange({"cursor": "1", "users": "gone,u1,u2"}, body,
                                              {"If-None-Match": '"v1"'})]}
    after_v2 = state(w, 2, {"u1": 2, "u2": 2}, ["gone"])
    delta_ok = {**second(w.answer(2, 1, users)),
                "expect": {"result": result(2, updated=["u1"], delta=["u1"], unchanged=["u2"], unknown=["gone"]),
                           "state": after_v2}}
    out = {
        "first_sync": {"description": "An empty device syncs three users: two get their records whole "
                                      "(snapshot: no cursor), 'gone' is unknown to the server.",
                       "steps": [first]},
        "delta_then_304": {
            "description": "Version 2 replaces 2 of u1's 200 candidates (a delta against the held record) and "
                           "leaves u2's unchanged (only version 2's signature is sent); then nothing changes: 304.",
            "starts_from": "first_sync", "steps": [delta_ok, {
                "sync": users,
                "exchanges": [{"request": {"path": "/v1/sync", "params": {"cursor": "2", "users": "gone,u1,u2"},
                                           "headers": {"If-None-Match": '"v2"'}},
                               "response": {"status": 304, "headers": {"ETag": '"v2"'}, "body_base64": "",
                                            "body": None}}],
                "expect": {"result": result(2, changed=False), "state": after_v2}}]},
        "snapshot_after_compaction": {
            "description": "The server is at version 4 and keeps history from version 3: a device at cursor 1 "
                           "gets every record whole, told so.",
            "starts_from": "first_sync", "steps": [{"sync": users, "exchanges": [exchange(
                {"cursor": "1", "users": "gone,u1,u2"}, w.answer(4, 1, users, history_from=3),
                {"If-None-Match": '"v1"'})],
                "expect": {"result": result(4, updated=["u1", "u2"], unknown=["gone"], snapshot=True),
                           "state": state(w, 4, {"u1": 4, "u2": 4}, ["gone"])}}]},
    }
    out["a_user_added_later"] = {
        "description": "A device holding version 1 for u1 adds u2: one request with cursor 1 names u2 in "
                       "'without' (no If-None-Match: the answer cannot be a 304), and the server, still at "
                       "version 1, answers u2 whole with the same manifest, which the device accepts for "
                       "records and states only.",
        "steps": [
            {"sync": ["u1"], "exchanges": [exchange({"cursor": "0", "users": "u1"}, w.answer(1, 0, ["u1"]))],
             "expect": {"result": result(1, updated=["u1"], snapshot=True),
                        "state": state(w, 1, {"u1": 1}, [])}},
            {"sync": ["u1", "u2"], "exchanges": [exchange({"cursor": "1", "users": "u1,u2", "without": "u2"},
                                                          w.answer(1, 1, ["u1", "u2"], without=("u2",)))],
             "expect": {"result": result(1, updated=["u2"]), "state": state(w, 1, {"u1": 1, "u2": 1}, [])}}]}
    # The base-not-held case: the delta is not applied; the device asks for u1 whole with cursor 0.
    wrong_base = w.answer(2, 1, users)
    wrong_base["records"]["u1"]["base_sha256"] = "00" * 32
    out["delta_against_a_base_not_held"] = {
        "description": "The answer's delta names a base the device does not hold: it is not applied, u2's "
                       "'same' is, and u1 is asked for again with cursor 0 and applied whole.",
        "starts_from": "first_sync", "steps": [{"sync": users, "exchanges": [
            exchange({"cursor": "1", "users": "gone,u1,u2"}, wrong_base, {"If-None-Match": '"v1"'}),
            exchange({"cursor": "0", "users": "u1"}, w.answer(2, 0, ["u1"]))],
            "expect": {"result": result(2, updated=["u1"], unchanged=["u2"], unknown=["gone"], snapshot=True),
                       "state": after_v2}}]}
    # Tampering: each rejected with the reason, the device keeps version 1.
    kept = {"state": state(w, 1, {"u1": 1, "u2": 1}, ["gone"])}
    new_sha = hashlib.sha256(w.raw[("u1", 2)]).digest()

    def tampered(name, description, edit, error, match, body=None):
        body = body or w.answer(2, 1, users)
        edit(body)
        out[name] = {"description": description,
                     "starts_from": "first_sync",
                     "steps": [{**second(body), "expect": {"error": error, "match": match, **kept}}]}

    def flip_delta(b):
        data = bytearray(base64.b64decode(b["records"]["u1"]["data"]))
        data[-3] ^= 0x01
        b["records"]["u1"]["data"] = b64(bytes(data))

    tampered("tamper_delta_bit_flip", "One bit flipped in u1's delta frame.", flip_delta,
             "IntegrityError", "record of user 'u1'")
    tampered("tamper_signature_of_another_version", "u1's entry carries a valid signature made for version 1.",
             lambda b: b["records"]["u1"].update(sig=b64(w.sign(1, "u1", new_sha))),
             "SignatureError", "does not verify for bundle 2")
    tampered("tamper_signature_of_another_user", "u1's entry carries u2's signature of version 2 (same digest).",
             lambda b: b["records"]["u1"].update(sig=b64(w.sign(2, "u2", new_sha))),
             "SignatureError", "does not verify for bundle 2")

    def bomb(b):
        ids, scores = wire.unpack_candidates_raw(w.raw[("u1", 2)])
        n = wire.MAX_RECORD_BYTES // 5 + 10
        raw = wire.pack_candidates_raw(np.resize(ids, n), np.sort(np.resize(scores, n))[::-1])
        digest = hashlib.sha256(raw).digest()
        b["records"]["u1"] = {"kind": "full", "sha256": digest.hex(), "sig": b64(w.sign(2, "u1", digest)),
                              "data": b64(wire.compress(raw))}

    tampered("tamper_record_beyond_the_cap", "u1's record is signed but inflates past MAX_RECORD_BYTES "
             f"({wire.MAX_RECORD_BYTES}); the frame declares its size, so nothing is inflated.", bomb,
             "IntegrityError", "above the cap")

    def flip_manifest(b):
        m = bytearray(base64.b64decode(b["manifest"]))
        m[len(m) // 2] ^= 0x01
        b["manifest"] = b64(bytes(m))

    def flip_item(b):
        key = "201"
        data = bytearray(base64.b64decode(b["items"][key]["data"]))
        data[-1] ^= 0x01
        b["items"][key]["data"] = b64(bytes(data))

    def item_of_another_model(b):
        key = "201"
        e = w.items(2)[int(key)]
        b["items"][key]["sig"] = b64(w.key.sign(wire.item_message("m-another-model", int(key), e.sha256)))

    tampered("tamper_item_entry_bit_flip", "One bit flipped in item 201's entry (entering u1's list).",
             flip_item, "SignatureError", "signature of item 201")
    tampered("tamper_item_signed_for_another_model", "Item 201's entry is signed for another model version.",
             item_of_another_model, "SignatureError", "signature of item 201 does not verify for model")
    tampered("tamper_manifest_bit_flip", "One bit flipped in the manifest.", flip_manifest,
             "SignatureError", "does not match the manifest")
    tampered("rollback_to_an_older_version", "The answer carries version 1 again to a device holding 1.",
             lambda b: None, "SignatureError", "rollback refused", body=w.answer(1, 0, users))
    tampered("expired_manifest", "Version 2's manifest expired before the device's clock (now).",
             lambda b: None, "SignatureError", "expired", body=w.answer(2, 1, users, expires_at=NOW - 1))

    # Wire 6: the seal. What it covers cannot be changed on the way, and what it says must add up.
    other = b64(wire.pack_state(UserState(np.array([9.0, 9.0, -9.0, 9.0], dtype=np.float32), 1.0, 1)))
    tampered("tamper_state_forged", "u1's live state replaced on the way (it would move u1's ranking).",
             lambda b: b["states"].update(u1=other), "SignatureError", "seal does not verify")

    def mark_unknown(b):
        del b["records"]["u2"]
        b["unknown_users"] = sorted([*b["unknown_users"], "u2"])

    tampered("tamper_user_marked_unknown", "u2's record removed and u2 listed as unknown on the way.",
             mark_unknown, "SignatureError", "seal does not verify")
    tampered("tamper_record_dropped", "u1's record removed on the way (the seal still lists u1's state).",
             lambda b: b["records"].pop("u1"), "IntegrityError", "neither a record nor an unknown mark")
    nan = b64(wire.pack_state(UserState(np.full(DIM, np.nan, dtype=np.float32), 1.0, 1)))
    tampered("tamper_state_not_finite", "u1's live state is all NaN, sealed by the server itself (a bug, not a "
             "proxy): every score would be NaN.", lambda b: b.update(w.seal({**b, "states": {**b["states"], "u1": nan}})),
             "IntegrityError", "must be finite")
    tampered("tamper_answer_to_another_cursor", "A genuine answer sealed for cursor 0 (records whole), served to "
             "the request with cursor 1.", lambda b: b.update(cursor=1), "SignatureError", "seal does not verify",
             body=w.answer(2, 0, users))

    # Item freshness: item CHANGED's entry changed at version 2; a proxy drops it, or replays its version 1
    # entry (genuinely signed for the model). The digest of u1's list no longer adds up: the device asks once
    # more with cursor 0 (every entry of its lists whole); a second such answer is refused.
    old = w.items(1)[CHANGED]

    def drop_changed(b):
        del b["items"][str(CHANGED)]

    def replay_changed(b):
        b["items"][str(CHANGED)] = {"data": b64(old.raw), "sig": b64(old.sig)}

    for name, edit, what in (("tamper_item_entry_dropped", drop_changed, "dropped"),
                             ("tamper_item_entry_replayed", replay_changed, "replaced by its version 1 entry")):
        first_try, retry = w.answer(2, 1, users), w.answer(2, 0, users)
        edit(first_try)
        edit(retry)
        out[name] = {"description": f"Item {CHANGED}'s new entry (version 2) is {what} on the way, in the answer "
                                    "and in the cursor 0 retry: refused, version 1 kept.",
                     "starts_from": "first_sync", "steps": [{"sync": users, "exchanges": [
                         exchange({"cursor": "1", "users": "gone,u1,u2"}, first_try, {"If-None-Match": '"v1"'}),
                         exchange({"cursor": "0", "users": "gone,u1,u2"}, retry)],
                         "expect": {"error": "IntegrityError", "match": "not the ones this version's answer sealed",
                                    **kept}}]}
    dropped_once = w.answer(2, 1, users)
    drop_changed(dropped_once)
    out["item_entry_dropped_once"] = {
        "description": f"Item {CHANGED}'s new entry is dropped from the cursor 1 answer only: the device asks "
                       "again with cursor 0 and applies that answer (every record whole, every entry of its "
                       "lists), reaching version 2 with the new entry.",
        "starts_from": "first_sync", "steps": [{"sync": users, "exchanges": [
            exchange({"cursor": "1", "users": "gone,u1,u2"}, dropped_once, {"If-None-Match": '"v1"'}),
            exchange({"cursor": "0", "users": "gone,u1,u2"}, w.answer(2, 0, users))],
            "expect": {"result": result(2, updated=["u1", "u2"], unknown=["gone"], snapshot=True),
                       "state": after_v2}}]}

    # Answers that cannot be true.
    out["tamper_304_to_a_first_sync"] = {
        "description": "An empty device (cursor 0) is answered 304: the server never says that; refused.",
        "steps": [{"sync": users, "exchanges": [
            {"request": {"path": "/v1/sync", "params": {"cursor": "0", "users": "gone,u1,u2"}, "headers": {}},
             "response": {"status": 304, "headers": {"ETag": '"v1"'}, "body_base64": "", "body": None}}],
            "expect": {"error": "IntegrityError", "match": "cannot be true",
                       "state": {"bundle_version": 0, "records": {}, "unknown_users": [], "artifacts": {},
                                 "items": {}}}}]}
    same_whole = w.answer(2, 0, ["u1"])
    same_whole["records"]["u1"] = {k: v for k, v in same_whole["records"]["u1"].items() if k != "data"} | {
        "kind": "same"}
    out["tamper_same_answering_cursor_0"] = {
        "description": "u1's delta names a base the device does not hold, so u1 is asked for whole (cursor 0); "
                       "that answer says 'same', which cannot answer cursor 0: refused, version 1 kept.",
        "starts_from": "first_sync", "steps": [{"sync": users, "exchanges": [
            exchange({"cursor": "1", "users": "gone,u1,u2"}, wrong_base, {"If-None-Match": '"v1"'}),
            exchange({"cursor": "0", "users": "u1"}, same_whole)],
            "expect": {"error": "IntegrityError", "match": "cannot be true",
                       "state": state(w, 2, {"u1": 1, "u2": 2}, ["gone"])}}]}
    return out


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def generate(out: Path = OUT) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    w = World()
    written = [out / "keys.json", out / "artifacts.json"]
    write_json(written[0], {"WARNING": "TEST ONLY. This seed is public; never deploy it.",
                            "derivation": "seed = sha256(seed_text as UTF-8); ed25519 private key = seed (RFC 8032)",
                            "seed_text": SEED_TEXT.decode(), "public_key_hex": w.pub.hex(), "device_clock": NOW})
    write_json(written[1], {f"/v1/artifacts/{v}/{w.files[k]}": {"name": k, "sha256": sha(b), "length": len(b),
                                                                 "bytes_base64": b64(b)}
                            for v in (1, 2, 4) for k, b in sorted(w.artifacts.items())})
    for name, scenario in scenarios(w).items():
        path = out / f"{name}.json"
        write_json(path, scenario)
        written.append(path)
    return written


if __name__ == "__main__":
    for p in generate():
        print(f"{p.relative_to(ROOT)}: {p.stat().st_size:,} bytes")
