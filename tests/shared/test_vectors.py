"""The wire-format test vectors in docs/vectors/ (wire 6) still hold for the reference implementation.

Each stored vector must decode to its documented values, the uncompressed
payloads must re-encode byte for byte, and the manifest signature must verify
with the stored TEST ONLY public key. Small independent readers written from
docs/wire-format.md's byte tables check that the tables say what the code does.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from pocketrank.shared import wire
from pocketrank.shared.errors import IntegrityError, SignatureError, TransportError, ValidationError
from pocketrank.shared.features import DECAY, TYPE_WEIGHTS, UserState, query_vector, update_user_state, user_vector
from pocketrank.shared.schemas import validate_event, validate_item

VECTORS = Path(__file__).resolve().parents[2] / "docs" / "vectors"


def load(name: str) -> dict:
    return json.loads((VECTORS / name).read_text(encoding="utf-8"))


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def f32_hex(a) -> str:
    return np.asarray(a, dtype="<f4").tobytes().hex()


def framed_cases() -> list[tuple[str, dict]]:
    out = [(name, load(name)) for name in ("vector_table.json", "catalog.json")]
    out += [(f"candidate_record.json:{c['user_id']}", c) for c in load("candidate_record.json")["cases"]]
    return out


# --- frames and digests ---------------------------------------------------


@pytest.mark.parametrize("name,vec", framed_cases(), ids=[n for n, _ in framed_cases()])
def test_frame_decodes_to_the_normative_payload(name, vec):
    frame, payload = bytes.fromhex(vec["frame_hex"]), bytes.fromhex(vec["payload_hex"])
    assert frame[:4] == b"\x28\xb5\x2f\xfd"  # zstd frame magic
    assert wire.decompress(frame) == payload
    assert (len(frame), sha(frame)) == (vec["frame_length"], vec["frame_sha256"])
    assert (len(payload), sha(payload)) == (vec["payload_length"], vec["payload_sha256"])
    # Whatever this zstd version emits for the payload must round-trip to the same payload.
    assert wire.decompress(wire.compress(payload)) == payload


# --- PRV1 vector table ----------------------------------------------------


def read_prv1(raw: bytes):
    """Independent reader from the doc's PRV1 table."""
    assert raw[0:4] == b"PRV1"
    n, dim = struct.unpack_from("<IH", raw, 4)
    ids = list(struct.unpack_from(f"<{n}i", raw, 10))
    flat = struct.unpack_from(f"<{n * dim}f", raw, 10 + 4 * n)
    assert len(raw) == 10 + 4 * n + 4 * n * dim
    return ids, [list(flat[i * dim : (i + 1) * dim]) for i in range(n)]


def test_vector_table():
    vec = load("vector_table.json")
    d = vec["decoded"]
    ids, vectors = wire.unpack_vectors(bytes.fromhex(vec["frame_hex"]))
    assert ids.tolist() == d["item_ids"]
    assert vectors.shape == (d["n"], d["dim"])
    assert vectors.tolist() == d["vectors"]
    payload = bytes.fromhex(vec["payload_hex"])
    assert read_prv1(payload) == (d["item_ids"], d["vectors"])
    again = wire.pack_vectors(np.array(d["item_ids"]), np.array(d["vectors"], dtype=np.float32))
    assert wire.decompress(again) == payload


# --- PRC2 candidate records -----------------------------------------------


def read_prc2(raw: bytes):
    """Independent reader from the doc's PRC2 table (plain struct, no numpy)."""
    assert raw[0:4] == b"PRC2"
    n, top, step = struct.unpack_from("<Iff", raw, 4)
    assert len(raw) == 16 + 5 * n
    planes = [raw[16 + k * n : 16 + (k + 1) * n] for k in range(4)]  # byte k of every id
    ids = [struct.unpack("<i", bytes(planes[k][i] for k in range(4)))[0] for i in range(n)]
    codes, c = [], 0
    for d in raw[16 + 4 * n :]:
        c += d
        codes.append(c)
    # Decode in float64, then round to float32 (struct's "f" does exactly that round trip).
    scores = [struct.unpack("<f", struct.pack("<f", top - step * q))[0] for q in codes]
    return ids, top, step, codes, scores


@pytest.mark.parametrize("case", load("candidate_record.json")["cases"], ids=lambda c: c["user_id"])
def test_candidate_record(case):
    d = case["decoded"]
    frame, payload = bytes.fromhex(case["frame_hex"]), bytes.fromhex(case["payload_hex"])
    assert base64.b64decode(case["base64"]) == frame
    ids, scores = wire.unpack_candidates(frame)
    assert ids.tolist() == d["item_ids"]
    assert scores.tolist() == d["scores"]
    assert read_prc2(payload) == (d["item_ids"], d["top"], d["step"], d["codes"], d["scores"])
    assert payload[16 : 16 + 4 * d["n"]].hex() == d["ids_shuffled_hex"]
    assert list(payload[16 + 4 * d["n"] :]) == d["steps"]
    # Each decoded score is within half a step of its input; re-encoding the inputs gives the payload.
    assert all(abs(a - b) <= d["step"] / 2 + 1e-7 for a, b in zip(scores.tolist(), case["inputs"]["scores"]))
    again = wire.pack_candidates(np.array(case["inputs"]["item_ids"], dtype=np.int64),
                                 np.array(case["inputs"]["scores"], dtype=np.float32))
    assert wire.decompress(again) == payload


# --- PRS1 live user state -------------------------------------------------


@pytest.mark.parametrize("case", load("user_state.json")["cases"], ids=lambda c: c["user_id"])
def test_user_state(case):
    d = case["decoded"]
    payload = bytes.fromhex(case["payload_hex"])
    assert base64.b64decode(case["base64"]) == payload and sha(payload) == case["payload_sha256"]
    assert len(payload) == 14 + 4 * d["dim"]
    assert payload[:4] == b"PRS1" and struct.unpack_from("<H", payload, 4) == (d["dim"],)
    st = wire.unpack_state(payload)
    assert st.s.tolist() == d["s"]
    assert (st.w, st.n_events) == (d["w"], d["n_events"])
    assert wire.pack_state(UserState(np.array(d["s"], dtype=np.float32), d["w"], d["n_events"])) == payload


# --- PRR1 record signatures ------------------------------------------------


def test_record_signatures_cover_the_uncompressed_record_for_one_version_and_user():
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    vec = load("record_signature.json")
    pub = Ed25519PublicKey.from_public_bytes(bytes.fromhex(load("keys.json")["public_key_hex"]))
    payloads = {c["user_id"]: bytes.fromhex(c["payload_hex"]) for c in load("candidate_record.json")["cases"]}
    by_user = {c["user_id"]: c for c in vec["cases"]}
    for uid, c in by_user.items():
        digest = hashlib.sha256(payloads[uid]).digest()
        assert c["payload_sha256"] == digest.hex()
        # Independent encoder from the doc: "PRR1" | u32le version | u8 len | user id | sha256.
        msg = b"PRR1" + struct.pack("<IB", c["version"], len(uid.encode())) + uid.encode() + digest
        assert msg.hex() == c["message_hex"] == wire.record_message(c["version"], uid, digest).hex()
        pub.verify(bytes.fromhex(c["signature_hex"]), msg)
        assert base64.b64decode(c["signature_base64"]).hex() == c["signature_hex"]
    for check in vec["checks"]:
        sig = bytes.fromhex(by_user[check.get("signature_of", check["user_id"])]["signature_hex"])
        digest = bytes.fromhex(by_user[check["user_id"]]["payload_sha256"])
        msg = wire.record_message(check["version"], check["user_id"], digest)
        if check["expect"] == "ok":
            pub.verify(sig, msg)
        else:
            with pytest.raises(InvalidSignature):
                pub.verify(sig, msg)


# --- catalog (canonical JSON) ---------------------------------------------


def test_catalog_is_canonical_json():
    vec = load("catalog.json")
    payload = bytes.fromhex(vec["payload_hex"])
    assert wire.unpack_json(bytes.fromhex(vec["frame_hex"])) == vec["decoded"]
    assert wire.canonical_json(vec["decoded"]) == payload
    assert payload.decode("utf-8") == vec["payload_text"]
    assert "Café".encode() in payload  # UTF-8, not \u escapes
    assert b" " not in payload.replace(b"Red Shoes", b"").replace(b"Blue Suede Shoes", b"").replace(
        b"Caf\xc3\xa9 Red Hat", b"")


# --- manifest and signature -----------------------------------------------


def test_test_key_derives_from_the_published_seed():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    keys = load("keys.json")
    assert "TEST ONLY" in keys["WARNING"]
    seed = hashlib.sha256(keys["seed_text"].encode()).digest()
    assert seed.hex() == keys["seed_hex"]
    pub = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert pub.hex() == keys["public_key_hex"] == load("manifest.json")["public_key_hex"]


def test_manifest_is_canonical_and_signed():
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

    vec = load("manifest.json")
    body = bytes.fromhex(vec["canonical_hex"])
    assert body.decode("utf-8") == vec["canonical_text"]
    assert (len(body), sha(body)) == (vec["length"], vec["sha256"])
    assert wire.canonical_json(json.loads(body)) == body
    assert json.loads(body) == vec["decoded"]
    assert wire.parse_manifest(body) == vec["decoded"]
    signature = bytes.fromhex(vec["signature_hex"])
    assert base64.b64decode(vec["signature_base64"]) == signature and len(signature) == 64
    Ed25519PublicKey.from_public_bytes(bytes.fromhex(vec["public_key_hex"])).verify(signature, body)
    # ed25519 is deterministic: the TEST ONLY seed signs these bytes to exactly this signature.
    seed = bytes.fromhex(load("keys.json")["seed_hex"])
    assert Ed25519PrivateKey.from_private_bytes(seed).sign(body) == signature


EXPECTED_ERRORS = {
    "rollback refused": "rollback refused",
    "expired": "expired",
    "bad signature": "does not match",
    "unsigned": "unsigned",
}


@pytest.mark.parametrize("check", load("manifest.json")["checks"], ids=lambda c: c["case"])
def test_device_manifest_checks(check):
    from pocketrank.edge_runtime.trust import load_public_key, verify_manifest

    vec = load("manifest.json")
    body = bytes.fromhex(check.get("manifest_hex", vec["canonical_hex"]))
    sig = check.get("signature_base64", vec["signature_base64"])
    key = load_public_key(vec["public_key_hex"])
    if check["expect"] == "ok":
        assert verify_manifest(body, sig, key, check["held_version"], now=check["now"]) == vec["decoded"]
    else:
        with pytest.raises(SignatureError, match=EXPECTED_ERRORS[check["expect"]]):
            verify_manifest(body, sig, key, check["held_version"], now=check["now"])


def artifact_bytes() -> dict[str, bytes]:
    return {"ranker": bytes.fromhex(load("ranker.json")["bytes_hex"])}  # wire 4: items come as entries


def test_manifest_lists_the_vector_artifacts():
    manifest = load("manifest.json")["decoded"]
    arts = artifact_bytes()
    assert set(manifest["artifacts"]) == set(arts)
    for name, data in arts.items():
        wire.check_digest(data, manifest["artifacts"][name]["sha256"], manifest["artifacts"][name]["length"], name)
    with pytest.raises(IntegrityError, match="expected"):
        wire.check_digest(arts["ranker"][:-1], manifest["artifacts"]["ranker"]["sha256"],
                          manifest["artifacts"]["ranker"]["length"], "ranker")
    flipped = bytes([arts["ranker"][0]]) + bytes([arts["ranker"][1] ^ 1]) + arts["ranker"][2:]
    with pytest.raises(IntegrityError, match="sha256 mismatch"):
        wire.check_digest(flipped, manifest["artifacts"]["ranker"]["sha256"], len(flipped), "ranker")
    assert manifest["user_state"] == {"decay": DECAY, "type_weights": dict(TYPE_WEIGHTS)}


# --- the user-state fold --------------------------------------------------


def index_of(fold: dict) -> dict[str, int]:
    """Product id -> item index, as the held item entries map them (events name products by their ids)."""
    return {ext: int(k) for k, ext in fold["external_ids"].items()}


def replay_reference(fold: dict):
    vectors = {i: np.array(v, dtype=np.float32) for i, v in zip(fold["item_ids"], fold["item_vectors"])}
    titles = {int(k): v for k, v in fold["titles"].items()}
    indexes = index_of(fold)
    state = UserState.empty(len(fold["item_vectors"][0]))
    for step in fold["steps"]:
        ev = step["event"]
        vec = vectors.get(indexes.get(ev["item_id"])) if "item_id" in ev else None
        if vec is None and ev.get("query"):
            vec = query_vector(ev["query"], titles, vectors)
        state = update_user_state(state, vec, ev["type"])
        yield step, vec, state


def test_fold_matches_the_reference_bit_for_bit():
    fold = load("fold.json")
    assert fold["decay"] == DECAY and fold["type_weights"] == dict(TYPE_WEIGHTS)
    # The fold's products are the item entries' (their ids read from the PRI2 bytes), and its events name
    # them by those ids, as strings (wire 5): never by the index.
    entries = {str(c["item_id"]): read_pri2(bytes.fromhex(c["payload_hex"]))["external_id"]
               for c in load("item_entry.json")["cases"]}
    assert fold["external_ids"] == entries
    assert all(isinstance(s["event"]["item_id"], str) for s in fold["steps"] if "item_id" in s["event"])
    for step, vec, state in replay_reference(fold):
        assert (vec is not None) == (step["v_source"] != "none"), step["event"]
        assert (None if vec is None else f32_hex(vec)) == step["v_f32le_hex"], step["event"]
        assert f32_hex(state.s) == step["after"]["s_f32le_hex"], step["event"]
        assert (state.w, state.n_events) == (step["after"]["w"], step["after"]["n_events"])
    assert f32_hex(user_vector(state)) == fold["user_vector_f32le_hex"]


def test_fold_as_documented_for_other_clients():
    """A scalar port of the doc's formulas (what a Kotlin/Swift client writes) gives the same bits."""
    f32 = np.float32
    fold = load("fold.json")
    dim = len(fold["item_vectors"][0])
    vectors = {i: [f32(x) for x in v] for i, v in zip(fold["item_ids"], fold["item_vectors"])}
    titles = {int(k): v for k, v in fold["titles"].items()}
    indexes = index_of(fold)

    def toks(text: str) -> set[str]:
        return set(re.findall(r"[a-z0-9]+", text.lower()))

    def qvec(query: str):
        wanted = toks(query)
        hits = sorted(i for i, t in titles.items() if i in vectors and wanted and wanted <= toks(t))[:20]
        if not hits:
            return None
        acc = [f32(0)] * dim
        for i in hits:  # ascending item id, binary32 adds
            acc = [f32(a + b) for a, b in zip(acc, vectors[i])]
        return [f32(a / f32(len(hits))) for a in acc]

    s, w, n = [f32(0)] * dim, 0.0, 0
    for step in fold["steps"]:
        ev = step["event"]
        # The held entry whose external id equals the event's item_id, compared as exact strings.
        v = vectors.get(indexes.get(ev["item_id"])) if "item_id" in ev else None
        if v is None and ev.get("query"):
            v = qvec(ev["query"])
        weight = fold["type_weights"][ev["type"]]
        if v is not None and weight != 0.0:
            d32, w32 = f32(fold["decay"]), f32(weight)
            s = [f32(f32(d32 * si) + f32(w32 * vi)) for si, vi in zip(s, v)]  # binary32, no FMA
            w = fold["decay"] * w + weight  # binary64
        n += 1
        assert f32_hex(s) == step["after"]["s_f32le_hex"] and w == step["after"]["w"] and n == step["after"]["n_events"]
    u = [f32(si / f32(w)) for si in s] if w > 1e-9 else [f32(0)] * dim
    assert f32_hex(u) == fold["user_vector_f32le_hex"]


# --- events ---------------------------------------------------------------


@pytest.mark.parametrize("case", load("events.json")["cases"], ids=lambda c: c["case"])
def test_event_validation(case):
    expect = case["expect"]
    if expect["valid"]:
        assert validate_event(case["input"]).to_dict() == expect["event"]
        # Wire 5: a product id is a string on the wire, whatever the input's type.
        assert isinstance(expect["event"].get("item_id", ""), str)
    else:
        with pytest.raises(ValidationError) as info:
            validate_event(case["input"])
        assert (info.value.field, info.value.message) == (expect["field"], expect["message"])


# --- a whole sync on the reference device ---------------------------------


class VectorTransport:
    """Serves sync_response.json and the artifact bytes; can truncate the first artifact download."""

    def __init__(self, body: dict, truncate_once: str | None = None):
        vec = load("sync_response.json")
        arts = artifact_bytes()
        self.body = body
        self.files = {url: arts[name] for name, url in vec["body"]["artifacts"].items()}
        self.truncate_once = truncate_once
        self.ranges: list[tuple[str, int]] = []

    def get_json(self, url, timeout, params=None, headers=None, limit=None):
        assert url == "/v1/sync" and params["users"]
        if params["cursor"] != self.body["cursor"] and params.get("items"):
            return 200, self.lacking_answer(int(params["cursor"]), params["users"].split(","))
        return 200, copy.deepcopy(self.body)

    def lacking_answer(self, cursor: int, users: list[str]) -> dict:
        """What the server answers a device at the vector's version naming lacking items it has no entry for:
        each user's record `same`, no entries, sealed (wire 6) for that cursor with the TEST ONLY key."""
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        body = copy.deepcopy(self.body)
        body.update(cursor=cursor, items={}, snapshot=False, snapshot_reason=None, unknown_users=[],
                    records={u: {k: v for k, v in body["records"][u].items() if k != "data"} | {"kind": "same"}
                             for u in users},
                    states={u: body["states"][u] for u in users},
                    list_digests={u: body["list_digests"][u] for u in users})
        block = wire.sealed_block(body["states"], body["unknown_users"], body["list_digests"], body["popular_digest"])
        model = json.loads(base64.b64decode(body["manifest"]))["model_version"]
        key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(load("keys.json")["seed_hex"]))
        body["seal"] = base64.b64encode(key.sign(wire.seal_message(body["version"], cursor, model, block))).decode()
        return body

    def get_bytes(self, url, timeout, start=0, limit=None):
        self.ranges.append((url, start))
        data = self.files[url]
        if url == self.truncate_once:
            self.truncate_once = None
            return data[: len(data) // 2], False
        return (data[start:], True) if start else (data, False)

    def post_json(self, url, body, timeout):
        raise TransportError("offline")

    def close(self):
        pass


def device(tmp_path, transport):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("sqlite_utils")
    from pocketrank.edge_runtime.client import EdgeClient

    return EdgeClient(tmp_path / "device.sqlite", load("manifest.json")["public_key_hex"], transport=transport)


def test_sync_response_applies_on_the_reference_device(tmp_path):
    vec = load("sync_response.json")
    users = vec["request"]["params"]["users"].split(",")
    client = device(tmp_path, VectorTransport(vec["body"]))
    result = client.sync(users)
    assert result.version == vec["after_apply"]["bundle_version"] and result.changed
    assert sorted(result.artifacts_fetched) == ["ranker"]
    # 70000 (in u1's list, not in the catalogue) is asked for once more by id; this transport answers the same body.
    assert set(result.items_received) == {int(i) for i in vec["body"]["items"]}
    # The answer's entries, read from their PRI2 bytes, map the item indexes to the products' own ids.
    names = {}
    for key, entry in vec["body"]["items"].items():
        d = read_pri2(base64.b64decode(entry["data"]))
        assert d["item_id"] == int(key)
        names[d["item_id"]] = d["external_id"]
    for uid in users:
        want = vec["after_apply"][f"offline_recommendation_{uid}"]
        assert [names[i] for i in want["item_indexes"]] == want["item_ids"], uid
        rec = client.recommend(uid, k=10, allow_server=False)
        assert (rec.source, rec.item_ids) == (want["source"], want["item_ids"]), uid
        if "scores" in want:
            assert [i.score for i in rec.items] == pytest.approx(want["scores"], abs=1e-5)
    with pytest.raises(SignatureError, match="rollback refused"):
        client.sync(users)  # the same version again
    client.close()


def test_tampered_record_leaves_the_device_untouched(tmp_path):
    vec = load("sync_response.json")
    body = copy.deepcopy(vec["body"])
    blob = bytearray(base64.b64decode(body["records"]["u1"]["data"]))
    blob[-1] ^= 0x01
    body["records"]["u1"]["data"] = base64.b64encode(bytes(blob)).decode()
    client = device(tmp_path, VectorTransport(body))
    with pytest.raises(IntegrityError, match="u1"):
        client.sync(vec["request"]["params"]["users"].split(","))  # the users the answer is for
    assert client.cache.version == 0 and client.cache.candidates("u1") is None
    client.close()


def test_truncated_artifact_resumes_with_a_range_request(tmp_path):
    vec = load("sync_response.json")
    url = vec["body"]["artifacts"]["ranker"]
    transport = VectorTransport(vec["body"], truncate_once=url)
    client = device(tmp_path, transport)
    users = vec["request"]["params"]["users"].split(",")  # the users the answer is for
    with pytest.raises(TransportError, match="resume"):
        client.sync(users)
    assert client.cache.version == 0
    assert client.sync(users).version == 3
    half = len(artifact_bytes()["ranker"]) // 2
    assert (url, half) in transport.ranges
    client.close()


# --- item entries (PRI2, wire 5) ---------------------------------------------


def read_pri2(raw: bytes) -> dict:
    """An independent reader written from docs/wire-format.md's PRI2 table (f16 entries)."""
    magic, item_id, prec, dim, price, stock = struct.unpack_from("<4siBHfB", raw, 0)
    assert magic == b"PRI2" and prec == 1 and stock in (0, 1)  # f16
    off = 4 + 4 + 1 + 2 + 4 + 1
    vector = [struct.unpack_from("<e", raw, off + 2 * k)[0] for k in range(dim)]
    off += 2 * dim
    texts = []
    for _ in range(3):  # E + external id, T + title, C + category
        n = raw[off]
        assert off + 1 + n <= len(raw)
        texts.append(raw[off + 1 : off + 1 + n].decode("utf-8"))
        off += 1 + n
    assert off == len(raw) == 19 + 2 * dim + sum(len(t.encode()) for t in texts)
    assert texts[0], "a wire 5 entry always carries the product's id"
    return {"item_id": item_id, "external_id": texts[0], "external_id_length": len(texts[0].encode()),
            "precision": "f16", "dim": dim, "price": price, "in_stock": bool(stock),
            "title": texts[1], "category": texts[2], "vector": vector}


def test_item_entries_decode_re_encode_and_verify():
    from pocketrank.edge_runtime.items import verify_items
    from pocketrank.edge_runtime.trust import load_public_key

    vec = load("item_entry.json")
    key = load_public_key(load("keys.json")["public_key_hex"])
    entries = {}
    for case in vec["cases"]:
        raw = bytes.fromhex(case["payload_hex"])
        assert read_pri2(raw) == case["decoded"]
        d = case["decoded"]
        assert len(raw) == case["payload_length"]
        # The marketplace's product, through validate_item: its id is the entry's external id, kept exactly.
        product = validate_item(case["product"])
        assert (product.item_id, product.sku) == (0, d["external_id"])
        assert (product.title, product.category, product.in_stock) == (d["title"], d["category"], d["in_stock"])
        assert wire.pack_item_entry(d["item_id"], np.array(d["vector"], np.float32), d["title"], d["category"],
                                    d["price"], d["in_stock"], "f16", external_id=d["external_id"]) == raw
        assert wire.unpack_item_entry(raw)["external_id"] == d["external_id"]
        assert sha(raw) == case["payload_sha256"]
        # Independent encoder from the doc: "PRIS" | u8 len | model version | i32le index | sha256.
        mv = case["model_version"].encode()
        msg = b"PRIS" + bytes([len(mv)]) + mv + struct.pack("<i", case["item_id"]) + hashlib.sha256(raw).digest()
        assert msg.hex() == case["message_hex"] == \
            wire.item_message(case["model_version"], case["item_id"], bytes.fromhex(sha(raw))).hex()
        entries[str(case["item_id"])] = {"data": base64.b64encode(raw).decode(), "sig": case["signature_base64"]}
    # The ids exercise wire 5: digits, a space and leading zeros that are not the index, non-ASCII.
    ids = [c["decoded"]["external_id"] for c in vec["cases"]]
    assert any(i.isdigit() for i in ids) and any(" " in i for i in ids) and any(not i.isascii() for i in ids)
    model = vec["cases"][0]["model_version"]
    held = verify_items(entries, model, 4, key)
    assert sorted(held) == sorted(c["item_id"] for c in vec["cases"])
    assert {i: it.external_id for i, it in held.items()} == {c["item_id"]: c["decoded"]["external_id"]
                                                             for c in vec["cases"]}
    with pytest.raises(SignatureError, match="for model"):
        verify_items(entries, model + "x", 4, key)
