"""Generate the pocketrank wire-format test vectors in docs/vectors/*.json (wire 6: PRI2 item entries
carrying the products' own string ids; events name products by those ids).

    cd /work/main && .venv/bin/python docs/vectors/make_vectors.py

Fixed inputs go through the reference implementation (shared/wire.py,
shared/features.py, shared/schemas.py), so the files say what the reference
produces. The signing key is derived from a fixed 32-byte seed: it is a TEST
ONLY key, published here on purpose; never deploy it.

Deterministic with the same library versions. Two outputs depend on library
versions and may change if this script is re-run elsewhere: zstd frame bytes
(the uncompressed payload is what is normative) and the tiny ONNX model's
serialisation. Everything that hashes or signs them is recomputed together, so
each generation is self-consistent. tests/shared/test_vectors.py checks the
stored files, not a fresh run.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import zstandard

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from pocketrank.shared import wire  # noqa: E402
from pocketrank.shared.errors import ValidationError  # noqa: E402
from pocketrank.shared.features import DECAY, TYPE_WEIGHTS, UserState, query_vector, update_user_state, user_vector  # noqa: E402
from pocketrank.shared.schemas import validate_event, validate_item  # noqa: E402

OUT = Path(__file__).resolve().parent

# TEST ONLY: a published seed. Anyone can sign with it. Never deploy it.
SEED_TEXT = b"pocketrank wire-format v1 test vectors -- TEST ONLY, never deploy"
SEED = hashlib.sha256(SEED_TEXT).digest()

ZSTD_NOTE = (
    f"frame_hex was produced by python-zstandard {zstandard.__version__} (libzstd "
    f"{'.'.join(map(str, zstandard.ZSTD_VERSION))}) at level {wire.ZSTD_LEVEL} with the content size "
    "in the frame header. Another encoder or version may emit different frame bytes for the same payload: "
    "decoders must accept frame_hex; the uncompressed payload is normative. Artifact digests in the manifest "
    "are over the frame bytes exactly as published; record signatures are over sha256 of the uncompressed "
    "PRC2 payload, so a device may store a record recompressed."
)

# --- fixed inputs ---------------------------------------------------------

DIM = 4
ITEM_IDS = [7, 42, 1001]
ITEM_VECTORS = np.array(
    [
        [0.5, -0.25, 1.0, 0.125],
        [-0.75, 0.5, 0.25, 1.5],
        [0.1, 0.2, -0.3, 0.4],  # not exact in binary32: exercises rounding
    ],
    dtype=np.float32,
)
# The products as the marketplace posts them (POST /v1/items): `item_id` is the marketplace's own id.
# A MovieLens-style id of digits equal to its index (what a catalogue from before string ids migrates
# to), a SKU with a space and leading zeros whose digits are NOT its index, and a non-ASCII id.
PRODUCTS = [
    {"item_id": "7", "title": "Red Shoes", "category": "shoes", "year": 2019, "price": 49.9,
     "categories": ["shoes", "red"]},
    {"item_id": "SKU 0042", "title": "Blue Suede Shoes", "category": "shoes", "price": 120.0, "in_stock": False,
     "categories": ["shoes"]},
    {"item_id": "CAFÉ-HAT-1001", "title": "Café Red Hat", "category": "hats", "year": 2024, "price": 15.5,
     "categories": ["hats"]},
]
# validate_item gives index 0 and sku = the product's id; the store then assigns each product its index.
ITEMS = [dataclasses.replace(validate_item(p), item_id=i) for p, i in zip(PRODUCTS, ITEM_IDS)]
EXTERNAL_IDS = {it.item_id: it.external_id for it in ITEMS}  # index -> the product's own id
POPULAR = [1001, 7]  # item indexes; the server lists in-stock items only

# (type, item_id, query), oldest first; item_id is the product's own id, as events carry it (wire 5).
# The unknown item is "42": the digits of index 42, whose product is "SKU 0042": an id is never an index.
FOLD_EVENTS = [
    ("view", "7", None),
    ("click", "SKU 0042", None),
    ("impression", "CAFÉ-HAT-1001", None),
    ("search", None, "red"),
    ("search", None, "Green"),
    ("add_to_cart", "CAFÉ-HAT-1001", None),
    ("click", "42", None),
    ("purchase", "SKU 0042", None),
    ("search", "7", "shoes"),
]

MANIFEST_TIMES = {"created_at": 1767225600.0, "expires_at": 4102444800.0}  # 2026-01-01, 2100-01-01
BUNDLE_VERSION = 3
MODEL_VERSION = "m20260101-000000-test00"


# --- helpers --------------------------------------------------------------


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def f32_list(a) -> list[float]:
    return [float(x) for x in np.asarray(a, dtype=np.float32)]


def f32_hex(a) -> str:
    return np.asarray(a, dtype="<f4").tobytes().hex()


def state_json(st: UserState) -> dict:
    return {"s": f32_list(st.s), "s_f32le_hex": f32_hex(st.s), "w": st.w,
            "w_f32": float(np.float32(st.w)), "n_events": st.n_events}


def framed(frame: bytes) -> dict:
    payload = wire.decompress(frame)
    return {
        "payload_hex": payload.hex(),
        "payload_length": len(payload),
        "payload_sha256": sha(payload),
        "frame_hex": frame.hex(),
        "frame_length": len(frame),
        "frame_sha256": sha(frame),
    }


def _line(value) -> str:
    return json.dumps(value, ensure_ascii=False)


def write(name: str, obj: dict) -> None:
    """One top-level key per line; lists of objects one element per line (small, still diffable)."""
    rows = []
    for key, value in obj.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            text = "[\n  " + ",\n  ".join(_line(v) for v in value) + "\n ]"
        else:
            text = _line(value)
        rows.append(f" {_line(key)}: {text}")
    path = OUT / name
    path.write_text("{\n" + ",\n".join(rows) + "\n}\n", encoding="utf-8")
    print(f"{name}: {path.stat().st_size} bytes")


def tiny_ranker() -> bytes:
    """A self-contained ONNX ranker with the production signature: scores = sigmoid(items . user)."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["items", "user"], ["prod"]),
            helper.make_node("ReduceSum", ["prod", "axes"], ["dot"], keepdims=0),
            helper.make_node("Sigmoid", ["dot"], ["scores"]),
        ],
        "pocketrank_test_ranker",
        [helper.make_tensor_value_info("user", TensorProto.FLOAT, [1, DIM]),
         helper.make_tensor_value_info("items", TensorProto.FLOAT, ["n", DIM])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["n"])],
        initializer=[helper.make_tensor("axes", TensorProto.INT64, [1], [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)],
                              producer_name="pocketrank-test-vectors", ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


# --- the vectors ----------------------------------------------------------


def main() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.from_private_bytes(SEED)
    pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    write("keys.json", {
        "WARNING": "TEST ONLY. This private seed is public; anything signed with it is untrusted. Never deploy it.",
        "derivation": "seed = sha256(seed_text as UTF-8); ed25519 private key = seed (RFC 8032)",
        "seed_text": SEED_TEXT.decode(),
        "seed_hex": SEED.hex(),
        "public_key_hex": pub.hex(),
    })

    # vector table (artifact "items")
    items_frame = wire.pack_vectors(np.array(ITEM_IDS), ITEM_VECTORS)
    write("vector_table.json", {
        "description": "PRV1 vector table: wire 3's bundle artifact 'items' (items.bin.zst); since wire 4 items "
                       "travel as item_entry.json entries. Kept: fold.json uses these vectors.",
        "zstd": ZSTD_NOTE,
        "decoded": {"n": len(ITEM_IDS), "dim": DIM, "item_ids": ITEM_IDS,
                    "vectors": [f32_list(v) for v in ITEM_VECTORS]},
        **framed(items_frame),
    })

    # the user-state fold
    titles = {it.item_id: it.title for it in ITEMS}
    vectors = {i: v for i, v in zip(ITEM_IDS, ITEM_VECTORS)}
    index_of = {ext: i for i, ext in EXTERNAL_IDS.items()}  # what the device's held entries map
    state = UserState.empty(DIM)
    steps = []
    for etype, item_id, query in FOLD_EVENTS:
        vec = vectors.get(index_of.get(item_id)) if item_id is not None else None
        source = "item" if vec is not None else "none"
        if vec is None and query:
            vec = query_vector(query, titles, vectors)
            source = "query" if vec is not None else "none"
        state = update_user_state(state, vec, etype)
        steps.append({
            "event": {"type": etype, **({"item_id": item_id} if item_id is not None else {}),
                      **({"query": query} if query is not None else {})},
            "weight": TYPE_WEIGHTS[etype],
            "v_source": source,
            "v": None if vec is None else f32_list(vec),
            "v_f32le_hex": None if vec is None else f32_hex(vec),
            "after": state_json(state),
        })
    final = state
    uvec = user_vector(final)
    write("fold.json", {
        "description": "User-state fold over the vector_table.json items and catalog.json titles. "
                       "S in binary32, W in binary64, starting from S = 0, W = 0, n = 0. Events name products "
                       "by their own ids (wire 5); external_ids maps each item index to its product's id, as the "
                       "item entries do. The unknown item is \"42\": the digits of index 42, whose product is "
                       "\"SKU 0042\" (an event's id is never read as an index).",
        "decay": DECAY,
        "type_weights": dict(TYPE_WEIGHTS),
        "item_ids": ITEM_IDS,
        "external_ids": {str(k): v for k, v in EXTERNAL_IDS.items()},
        "item_vectors": [f32_list(v) for v in ITEM_VECTORS],
        "titles": {str(k): v for k, v in titles.items()},
        "steps": steps,
        "final": state_json(final),
        "user_vector": f32_list(uvec),
        "user_vector_f32le_hex": f32_hex(uvec),
    })

    # live user states (PRS1, not compressed)
    empty = UserState.empty(DIM)
    write("user_state.json", {
        "description": "PRS1 live user state: the values of the sync answer's 'states' map (base64 of these "
                       "bytes; NOT zstd-compressed). W is binary32 on the wire.",
        "cases": [
            {"user_id": "u1", "note": "the final state of fold.json",
             "decoded": {"dim": DIM, "s": f32_list(final.s), "w": float(np.float32(final.w)),
                         "n_events": final.n_events},
             "payload_hex": wire.pack_state(final).hex(), "payload_sha256": sha(wire.pack_state(final)),
             "base64": base64.b64encode(wire.pack_state(final)).decode()},
            {"user_id": "nobody", "note": "what the server sends for a user it has never seen",
             "decoded": {"dim": DIM, "s": [0.0] * DIM, "w": 0.0, "n_events": 0},
             "payload_hex": wire.pack_state(empty).hex(), "payload_sha256": sha(wire.pack_state(empty)),
             "base64": base64.b64encode(wire.pack_state(empty)).decode()},
        ],
    })

    # candidate records (PRC2)
    rec_inputs = {
        "u1": ([1001, 7, 42, 70000], [0.9, 0.625, 0.6, 0.1]),  # synthetic: a publisher would leave out consumed items
        "u:2": ([], []),
    }
    records, rec_cases = {}, []
    for uid, (ids, scores) in rec_inputs.items():
        frame = wire.pack_candidates(np.array(ids, dtype=np.int64), np.array(scores, dtype=np.float32))
        records[uid] = frame
        top, step, codes = wire.quantize_scores(np.array(scores, dtype=np.float32))
        rec_cases.append({
            "user_id": uid,
            "inputs": {"item_ids": ids, "scores": scores},
            "decoded": {"n": len(ids), "item_ids": ids, "top": top, "step": step,
                        "codes": codes.tolist(), "steps": np.diff(codes, prepend=0).tolist(),
                        "ids_shuffled_hex": wire._shuffle(np.array(ids, dtype="<i4")).hex(),
                        "scores": [float(x) for x in wire.decode_scores(top, step, codes)]},
            "base64": base64.b64encode(frame).decode(),
            **framed(frame),
        })
    write("candidate_record.json", {
        "description": "PRC2 candidate records (wire 3): the 'data' of a 'full' entry of the sync answer's 'records' "
                       "map (base64 of the zstd frame). Record signatures (record_signature.json) cover "
                       "sha256 of the uncompressed payload (payload_sha256).",
        "zstd": ZSTD_NOTE,
        "cases": rec_cases,
    })

    # record signatures (PRR1 messages): what replaced wire v1's user index
    sig_cases = []
    for uid, frame in records.items():
        digest = hashlib.sha256(wire.decompress(frame)).digest()
        msg = wire.record_message(BUNDLE_VERSION, uid, digest)
        sig_cases.append({"user_id": uid, "version": BUNDLE_VERSION, "payload_sha256": digest.hex(),
                          "message_hex": msg.hex(), "signature_hex": key.sign(msg).hex(),
                          "signature_base64": base64.b64encode(key.sign(msg)).decode()})
    write("record_signature.json", {
        "description": "Record signatures: ed25519 (TEST ONLY key, keys.json) over the PRR1 message "
                       "'PRR1' | u32le version | u8 len | utf-8 user_id | sha256(uncompressed PRC2 payload). "
                       "The 'sig' of each entry of the sync answer's 'records' map. A signature verifies only "
                       "for the version and user it was made for.",
        "cases": sig_cases,
        "checks": [
            {"case": "as signed", "user_id": "u1", "version": BUNDLE_VERSION, "expect": "ok"},
            {"case": "another version", "user_id": "u1", "version": BUNDLE_VERSION + 1, "expect": "bad signature"},
            {"case": "another user", "user_id": "u:2", "version": BUNDLE_VERSION, "signature_of": "u1",
             "expect": "bad signature"},
        ],
    })

    # catalog (artifact "catalog"): wire 3's form, integer ids (what products were called then), kept as
    # it was published; Item.to_dict() is wire 5's product JSON, not this.
    catalog = {"items": [{"item_id": it.item_id, "title": it.title, "category": it.category, "year": it.year,
                          "price": it.price, "in_stock": it.in_stock, "categories": list(it.categories)}
                         for it in ITEMS], "popular": POPULAR}
    catalog_frame = wire.pack_json(catalog)
    write("catalog.json", {
        "description": "Catalog: wire 3's bundle artifact 'catalog' (catalog.json.zst), canonical JSON in a zstd "
                       "frame; since wire 4 metadata travels in item_entry.json entries and 'popular' in the manifest.",
        "zstd": ZSTD_NOTE,
        "decoded": catalog,
        "payload_text": wire.canonical_json(catalog).decode(),
        **framed(catalog_frame),
    })

    # ranker (artifact "ranker"): not zstd, raw ONNX bytes
    ranker = tiny_ranker()
    write("ranker.json", {
        "description": "A tiny ONNX model with the ranker's signature (inputs user float32[1,dim], items "
                       "float32[n,dim]; output scores float32[n]) computing sigmoid(items . user). It stands in "
                       "for ranker.int8.onnx so the bundle in manifest.json is complete. Raw bytes, no zstd.",
        "bytes_hex": ranker.hex(),
        "length": len(ranker),
        "sha256": sha(ranker),
    })

    # item entries (PRI2, wire 5): what the sync answer's 'items' map carries, one signed entry per item
    meta = {it.item_id: it for it in ITEMS}
    products = {it.item_id: p for it, p in zip(ITEMS, PRODUCTS)}
    item_cases, entries = [], {}
    for item_id, vec in zip(ITEM_IDS, ITEM_VECTORS):
        it = meta[item_id]
        raw = wire.pack_item_entry(item_id, vec, it.title, it.category, it.price, it.in_stock, "f16",
                                   external_id=it.external_id)
        digest = hashlib.sha256(raw).digest()
        msg = wire.item_message(MODEL_VERSION, item_id, digest)
        entries[item_id] = (raw, key.sign(msg))
        item_cases.append({
            "item_id": item_id,
            "product": products[item_id],
            "decoded": {"item_id": item_id, "external_id": it.external_id, "external_id_length": len(
                            it.external_id.encode()), "precision": "f16", "dim": DIM,
                        "price": float(np.float32(it.price)),
                        "in_stock": it.in_stock, "title": it.title, "category": it.category,
                        "vector": f32_list(vec.astype(np.float16).astype(np.float32))},
            "payload_hex": raw.hex(), "payload_length": len(raw), "payload_sha256": digest.hex(),
            "model_version": MODEL_VERSION, "message_hex": msg.hex(),
            "signature_base64": base64.b64encode(entries[item_id][1]).decode(),
        })
    write("item_entry.json", {
        "description": "PRI2 item entries (wire 5): the 'data' of each entry of the sync answer's 'items' map "
                       "(base64 of these raw bytes, not compressed), and its 'sig': ed25519 (TEST ONLY key) over "
                       "'PRIS' | u8 len | utf-8 model_version | i32le item index | sha256(payload). The entry "
                       "carries the item index and the product's own id (external_id, u8 byte length + UTF-8 "
                       "after the vector), so the signature covers the mapping. 'product' is the JSON the "
                       "marketplace posted (POST /v1/items), validated by validate_item; the store assigned "
                       "the index. A signature verifies only for the model version and item it was made for.",
        "cases": item_cases,
    })

    # manifest + signature
    art_bytes = {"ranker": ranker}
    names = {"ranker": "ranker.int8.onnx"}
    manifest = {
        "wire_version": wire.WIRE_VERSION,
        "version": BUNDLE_VERSION,
        **MANIFEST_TIMES,
        "model_version": MODEL_VERSION,
        "embedding_dim": DIM,
        "user_state": {"decay": DECAY, "type_weights": dict(TYPE_WEIGHTS)},
        "popular": POPULAR,
        "items": {"count": len(ITEM_IDS), "precision": "f16"},
        "artifacts": {k: {"file": names[k], "sha256": sha(b), "length": len(b)} for k, b in art_bytes.items()},
        "model": {"opset": 18, "exporter": "test vector (onnx.helper)", "quantization": "none", "parity": {}},
    }
    body = wire.canonical_json(manifest)
    signature = key.sign(body)
    tampered = bytearray(body)
    tampered[body.index(b'"version":3') + len('"version":')] = ord("4")
    write("manifest.json", {
        "description": "A complete signed manifest for bundle version 3 whose artifact is the model in "
                       "ranker.json (items come as item_entry.json entries). TEST ONLY key (keys.json).",
        "decoded": manifest,
        "canonical_text": body.decode(),
        "canonical_hex": body.hex(),
        "length": len(body),
        "sha256": sha(body),
        "public_key_hex": pub.hex(),
        "signature_hex": signature.hex(),
        "signature_base64": base64.b64encode(signature).decode(),
        "checks": [
            {"case": "as published", "held_version": 0, "now": MANIFEST_TIMES["created_at"], "expect": "ok"},
            {"case": "same version held", "held_version": 3, "now": MANIFEST_TIMES["created_at"],
             "expect": "rollback refused"},
            {"case": "newer version held", "held_version": 9, "now": MANIFEST_TIMES["created_at"],
             "expect": "rollback refused"},
            {"case": "after expires_at", "held_version": 0, "now": MANIFEST_TIMES["expires_at"] + 1,
             "expect": "expired"},
            {"case": "at exactly expires_at", "held_version": 0, "now": MANIFEST_TIMES["expires_at"],
             "expect": "ok"},
            {"case": "one byte changed ('version':3 -> 4), same signature", "held_version": 0,
             "now": MANIFEST_TIMES["created_at"], "manifest_hex": bytes(tampered).hex(),
             "expect": "bad signature"},
            {"case": "no signature", "held_version": 0, "now": MANIFEST_TIMES["created_at"],
             "signature_base64": "", "expect": "unsigned"},
        ],
    })

    # a whole sync answer
    users = sorted({"u1", "u:2", "nobody"})
    states = {"u1": final, "u:2": empty, "nobody": empty}
    envelope = {
        "version": BUNDLE_VERSION,
        "cursor": 0,
        "manifest": base64.b64encode(body).decode(),
        "signature": base64.b64encode(signature).decode(),
        "snapshot": True,
        "snapshot_reason": "no cursor: a first sync gets every record whole",
        "history_from": 1,
        "records": {c["user_id"]: {"kind": "full", "sha256": c["payload_sha256"], "sig": c["signature_base64"],
                                   "data": base64.b64encode(records[c["user_id"]]).decode()}
                    for c in sig_cases if c["user_id"] in users},
        "unknown_users": [u for u in users if u not in records],
        "states": {u: base64.b64encode(wire.pack_state(states[u])).decode() for u in users},
        "artifacts": {k: f"/v1/artifacts/{BUNDLE_VERSION}/{names[k]}" for k in sorted(art_bytes)},
        # u1's candidates that are in the catalogue (70000 is not) and the popular list
        "items": {str(i): {"data": base64.b64encode(entries[i][0]).decode(),
                           "sig": base64.b64encode(entries[i][1]).decode()} for i in sorted(entries)},
    }
    # Wire 6: each listed user's list digest (its candidates' current entries; 70000 has none) and the popular
    # list's, then the seal over them, the states and the unknown users, for version, cursor 0 and the model.
    shas = {i: hashlib.sha256(raw).digest() for i, (raw, _) in entries.items()}
    envelope["list_digests"] = {u: wire.items_digest(wire.unpack_candidates(records[u])[0].tolist(), shas).hex()
                                for u in envelope["records"]}
    envelope["popular_digest"] = wire.items_digest(POPULAR, shas).hex()
    block = wire.sealed_block(envelope["states"], envelope["unknown_users"], envelope["list_digests"],
                              envelope["popular_digest"])
    envelope["seal"] = base64.b64encode(key.sign(wire.seal_message(BUNDLE_VERSION, 0, MODEL_VERSION, block))).decode()
    # What the device's offline rerank of u1 gives with this bundle and the tiny ranker.
    cand = np.array([1001, 7, 42])
    # The device holds the f16 vectors of the item entries.
    cand_vecs = np.stack([vectors[int(i)].astype(np.float16).astype(np.float32) for i in cand])
    scores = 1.0 / (1.0 + np.exp(-(cand_vecs.astype(np.float64) @ uvec.astype(np.float64))))
    order = sorted(zip(cand.tolist(), scores.tolist()), key=lambda p: (-p[1], p[0]))
    write("sync_response.json", {
        "description": "GET /v1/sync?cursor=0&users=u1,u:2,nobody answered 200 with ETag \"v3\". The artifact "
                       "URLs serve the frame/bytes of the named vector files. after_apply names products by "
                       "their own ids (item_ids, from the item entries), with the item indexes they have in "
                       "the records and the manifest's popular list (item_indexes).",
        "request": {"path": "/v1/sync", "params": {"cursor": "0", "users": "u1,u:2,nobody"}},
        "etag": f'"v{BUNDLE_VERSION}"',
        "body": envelope,
        "artifact_sources": {envelope["artifacts"][k]: {"ranker": "ranker.json#bytes_hex"}[k]
                             for k in envelope["artifacts"]},
        "after_apply": {
            "bundle_version": BUNDLE_VERSION,
            "offline_recommendation_u1": {"source": "edge", "item_ids": [EXTERNAL_IDS[i] for i, _ in order],
                                          "item_indexes": [i for i, _ in order],
                                          "scores": [round(s, 6) for _, s in order]},
            "offline_recommendation_u:2": {"source": "cache", "item_ids": [], "item_indexes": []},
            "offline_recommendation_nobody": {"source": "popular", "item_ids": [EXTERNAL_IDS[i] for i in POPULAR],
                                              "item_indexes": POPULAR},
        },
    })

    # event validation (wire 5: item_id is the product's own string id)
    ok = {"event_id": "e-0001", "user_id": "u1", "device_id": "phone-1", "type": "click",
          "timestamp": 1767225600.5, "item_id": "SKU 0042", "session_id": "s1"}
    no_item = {k: v for k, v in ok.items() if k != "item_id"}
    cases = [
        ("valid click: item_id is the product's own id, a space inside kept", ok),
        ("valid search: query trimmed, item_id optional",
         {**no_item, "type": "search", "query": "  red shoes "}),
        ("valid: session_id optional, integer timestamp", {k: v for k, v in ok.items() if k != "session_id"}
         | {"timestamp": 1767225600}),
        ("valid: item_id of digits kept as given, not read as 42", {**ok, "item_id": "0042"}),
        ("valid: a non-ASCII item_id kept exactly", {**ok, "item_id": "CAFÉ-HAT-1001"}),
        ("valid: item_id of 64 characters (128 bytes of UTF-8)", {**ok, "item_id": "é" * 64}),
        ("lenient: item_id as an integer becomes its digits", {**ok, "item_id": 42}),
        ("lenient: user_id as an integer", {**ok, "user_id": 1234}),
        ("valid: impression moves no state but is logged", {**ok, "type": "impression"}),
        ("not an object", ["click"]),
        ("unknown field (first in sorted order is named)", {**ok, "price": 3, "extra": 1}),
        ("missing type", {k: v for k, v in ok.items() if k != "type"}),
        ("unknown type", {**ok, "type": "like"}),
        ("click without item_id", no_item),
        ("item_id 0", {**ok, "item_id": 0}),
        ("item_id above int32", {**ok, "item_id": 2147483648}),
        ("item_id a float", {**ok, "item_id": 42.0}),
        ("item_id a boolean", {**ok, "item_id": True}),
        ("item_id empty", {**ok, "item_id": ""}),
        ("item_id with a trailing space", {**ok, "item_id": "SKU 0042 "}),
        ("item_id of 65 characters", {**ok, "item_id": "é" * 65}),
        ("item_id with a control character", {**ok, "item_id": "SKU\n0042"}),
        ("search without query", {**no_item, "type": "search"}),
        ("search with blank query", {**no_item, "type": "search", "query": "   "}),
        ("search query of 257 characters", {**no_item, "type": "search", "query": "a" * 257}),
        ("query on a view", {**ok, "type": "view", "query": "red"}),
        ("missing timestamp", {k: v for k, v in ok.items() if k != "timestamp"}),
        ("timestamp as a string", {**ok, "timestamp": "1767225600"}),
        ("timestamp negative", {**ok, "timestamp": -1}),
        ("timestamp after 2100", {**ok, "timestamp": 4102444801}),
        ("missing event_id", {k: v for k, v in ok.items() if k != "event_id"}),
        ("event_id with a space", {**ok, "event_id": "e 1"}),
        ("event_id of 65 characters", {**ok, "event_id": "e" * 65}),
        ("user_id null", {**ok, "user_id": None}),
        ("device_id missing", {k: v for k, v in ok.items() if k != "device_id"}),
        ("session_id empty string", {**ok, "session_id": ""}),
    ]
    out = []
    for name, obj in cases:
        try:
            expect = {"valid": True, "event": validate_event(obj).to_dict()}
        except ValidationError as exc:
            expect = {"valid": False, "field": exc.field, "message": exc.message}
        out.append({"case": name, "input": obj, "expect": expect})
    write("events.json", {
        "description": "validate_event: each input and what the reference does with it (wire 5: item_id is "
                       "the product's own string id; an integer is taken as its digits). On the server a "
                       "rejected event becomes {event_id, status: rejected, field, reason: message}.",
        "cases": out,
    })


if __name__ == "__main__":
    main()
