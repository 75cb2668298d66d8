"""Products named by the marketplace's own string ids on the device (wire 5 on), without a server.

A small bundle is made and signed here (a TEST ONLY key), its sync answer served from memory: records,
`popular` and the answer's `items` keys carry int32 indexes; each signed PRI2 entry maps its index to the
product's own id, which is all the app sees: recommend() returns it, track() takes it, the outbox uploads it.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import sqlite3
import time

import numpy as np
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pocketrank.edge_runtime import EdgeClient, IntegrityError, TransportError, ValidationError, schema
from pocketrank.edge_runtime.artifacts import ArtifactFiles
from pocketrank.shared import wire
from pocketrank.shared.features import DECAY, TYPE_WEIGHTS, UserState
from pocketrank.shared.rules import top_by_score
from tests.factories import dot_ranker

DIM = 8
MODEL = "m-test-1"
USER = "u1"
KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"pocketrank string ids -- TEST ONLY").digest())
PUBLIC = KEY.public_key().public_bytes_raw().hex()

# index -> (the product's own id, title, category); index 40's own id is its digits (a catalogue from before).
PRODUCTS = {1: ("Toy Story (1995)", "Toy Story (1995)", "Animation"),
            2: ("café-crème ☕ 東京", "Café crème", "Drinks"),
            3: ("SKU/0003:blue", "Blue lamp", "Home"),
            40: ("40", "Star Wars (1977)", "Action")}
PRODUCTS.update({i: (f"sku-{i:04d}", f"Thing {i}", ("Home", "Toys", "Books")[i % 3]) for i in range(4, 30)})
CANDIDATES = [1, 2, 3, 40] + list(range(4, 24))  # USER's list; 24-29 only in popular
POPULAR = [25, 26, 27, 28, 29, 99, 1]  # 99: an index the server sends no entry for (not in the catalogue)
PRODUCTS_BY_ID = {ext: i for i, (ext, _, _) in PRODUCTS.items()}


def vectors() -> dict[int, np.ndarray]:
    rng = np.random.default_rng(5)
    out = {}
    for i in sorted(PRODUCTS):
        v = rng.normal(size=DIM)
        out[i] = (v / np.linalg.norm(v)).astype(np.float32)
    return out


RANKER = dot_ranker(DIM)


def entry(index: int, external_id: str | None = None, model: str = MODEL, title: str | None = None) -> dict:
    ext, t, cat = PRODUCTS.get(index, (str(index), f"Thing {index}", "Home"))
    raw = wire.pack_item_entry(index, vectors().get(index, np.ones(DIM, np.float32)), t if title is None else title,
                               cat, 5.0 + index, True, "f16", external_id=ext if external_id is None else external_id)
    sig = KEY.sign(wire.item_message(model, index, hashlib.sha256(raw).digest()))
    return {"data": base64.b64encode(raw).decode(), "sig": base64.b64encode(sig).decode()}


def answer(version: int = 1, model: str = MODEL, items: dict | None = None) -> dict:
    """The sync answer for USER: a full record, the live state, and the entries of the list and popular."""
    vec = vectors()
    state = UserState((vec[5] + vec[6]).astype(np.float32), 2.0, 2)
    scores = np.array([float(vec[i] @ (state.s / 2)) for i in CANDIDATES], np.float32)
    order = np.argsort(-scores, kind="stable")
    raw = wire.pack_candidates_raw(np.array(CANDIDATES)[order], 1 / (1 + np.exp(-scores[order])))
    manifest = {"wire_version": wire.WIRE_VERSION, "version": version, "created_at": time.time(),
                "expires_at": time.time() + 30 * 86400, "model_version": model, "embedding_dim": DIM,
                "user_state": {"decay": DECAY, "type_weights": dict(TYPE_WEIGHTS)}, "popular": POPULAR,
                "items": {"count": len(PRODUCTS), "precision": "f16"},
                "artifacts": {"ranker": {"file": "ranker.onnx", "sha256": wire.sha256_hex(RANKER),
                                         "length": len(RANKER)}}}
    body = wire.canonical_json(manifest)
    sha = hashlib.sha256(raw).digest()
    if items is None:
        items = {str(i): entry(i, model=model) for i in sorted(set(CANDIDATES) | set(POPULAR)) if i in PRODUCTS}
    return {"version": version, "cursor": 0, "snapshot": True, "manifest": base64.b64encode(body).decode(),
            "signature": base64.b64encode(KEY.sign(body)).decode(), "unknown_users": [],
            "records": {USER: {"kind": "full", "sha256": sha.hex(),
                               "data": base64.b64encode(wire.compress(raw)).decode(),
                               "sig": base64.b64encode(KEY.sign(wire.record_message(version, USER, sha))).decode()}},
            "states": {USER: base64.b64encode(wire.pack_state(state)).decode()},
            "artifacts": {"ranker": f"/v1/artifacts/{version}/ranker.onnx"}, "items": items}


def sealed(body: dict, cursor: int) -> dict:
    """`body` as the server answers it to `cursor` (wire 6): its lists' and popular's digests over the server's
    entries (every product's default entry, replaced by the ones the body carries) and the seal."""
    body = copy.deepcopy(body)
    shas = {i: hashlib.sha256(base64.b64decode(entry(i)["data"])).digest() for i in PRODUCTS}
    for key, e in (body.get("items") or {}).items():
        try:
            shas[int(key)] = hashlib.sha256(base64.b64decode(e["data"])).digest()
        except (TypeError, KeyError, ValueError):
            pass  # a malformed entry the device refuses anyway
    lists = {u: wire.unpack_candidates(base64.b64decode(r["data"]))[0].tolist() for u, r in body["records"].items()}
    body.update(cursor=cursor, list_digests={u: wire.items_digest(ids, shas).hex() for u, ids in lists.items()},
                popular_digest=wire.items_digest(POPULAR, shas).hex())
    block = wire.sealed_block(body["states"], body["unknown_users"], body["list_digests"], body["popular_digest"])
    model = json.loads(base64.b64decode(body["manifest"]))["model_version"]
    body["seal"] = base64.b64encode(KEY.sign(wire.seal_message(body["version"], cursor, model, block))).decode()
    return body


class Memory:
    """The server's side, from memory: one sync answer, the ranker, /v1/events, /v1/recommendations."""

    def __init__(self, body: dict, recommendations: dict | None = None):
        self.body, self.recommendations = body, recommendations
        self.posted: list[dict] = []
        self.sync_params: list[dict] = []

    def get_json(self, url, timeout, params=None, headers=None, limit=None):
        if url == "/v1/recommendations":
            if self.recommendations is None:
                raise TransportError("offline")
            return 200, copy.deepcopy(self.recommendations)
        self.sync_params.append(dict(params))
        if int(params["cursor"]) >= self.body["version"] and not params.get("items"):
            return 304, None
        return 200, sealed(self.body, int(params["cursor"]))

    def get_bytes(self, url, timeout, start=0, limit=None):
        return RANKER[start:], bool(start)

    def post_json(self, url, body, timeout, headers=None, answers=()):
        self.posted += body["events"]
        return {"results": [{"event_id": e["event_id"], "status": "accepted"} for e in body["events"]]}

    def close(self):
        pass


@pytest.fixture
def phone(tmp_path):
    client = EdgeClient(tmp_path / "phone.sqlite", PUBLIC, transport=Memory(answer()), device_id="phone")
    client.sync([USER])
    yield client
    client.close()


def own_ids() -> set[str]:
    return {ext for ext, _, _ in PRODUCTS.values()}


def test_offline_recommend_names_every_product_by_its_own_id(phone):
    rec = phone.recommend(USER, 10, allow_server=False)
    assert rec.source == "edge" and len(rec.items) == 10
    assert all(isinstance(i, str) for i in rec.item_ids) and set(rec.item_ids) <= own_ids()
    # The order is the ranker's over the indexes (ties by index), each index named by its entry.
    cands = phone.cache.packed(USER)
    from pocketrank.edge_runtime.rerank import LocalRanker
    from pocketrank.shared.features import user_vector

    scores = LocalRanker(RANKER).score(user_vector(phone.cache.user_state(USER)), cands.vectors)
    expected = [PRODUCTS[i][0] for i, _ in top_by_score(cands.ids, scores)[:10]]
    assert rec.item_ids == expected
    assert all(it.title == PRODUCTS[i][1] for it, i in zip(rec.items, [PRODUCTS_BY_ID[e] for e in rec.item_ids]))
    assert json.loads(json.dumps(rec.to_dict()))["item_ids"] == rec.item_ids


def test_cache_and_popular_answers_name_products_too(phone):
    phone.slot.put("none", None)  # no usable ranker: the cached order
    phone.cache.invalidate()
    with phone.cache.tx() as conn:
        conn.execute("UPDATE artifacts SET sha256 = 'none' WHERE name = 'ranker'")
    rec = phone.recommend(USER, 5, allow_server=False)
    assert rec.source == "cache" and set(rec.item_ids) <= own_ids() and len(rec.items) == 5
    cold = phone.recommend("someone-new", 10, allow_server=False)
    # Popular, in order; index 99 has no entry, so it cannot be named and is left out.
    assert cold.source == "popular"
    assert cold.item_ids == [PRODUCTS[i][0] for i in POPULAR if i in PRODUCTS]


def test_track_takes_a_product_id_with_spaces_and_the_local_list_follows(phone):
    before = phone.recommend(USER, 24, allow_server=False)
    assert "Toy Story (1995)" in before.item_ids
    state = phone.cache.user_state(USER)
    phone.track(USER, "click", "Toy Story (1995)")
    after_state = phone.cache.user_state(USER)
    assert after_state.n_events == state.n_events + 1 and after_state.w > state.w  # folded with its vector
    assert phone.cache.consumed(USER) == {"Toy Story (1995)"}
    after = phone.recommend(USER, 24, allow_server=False)
    assert "Toy Story (1995)" not in after.item_ids and after.source == "edge"
    body = phone.outbox.batch(10)[0]
    assert body["item_id"] == "Toy Story (1995)" and body["context"]["source"] == "edge"
    assert phone.flush().acknowledged == 1
    assert phone.transport.posted[0]["item_id"] == "Toy Story (1995)"  # uploaded as the product's own id


def test_a_non_ascii_id_and_an_integer_id_resolve_to_their_entries(phone):
    phone.track(USER, "add_to_cart", "café-crème ☕ 東京")
    phone.track(USER, "purchase", 40)  # an integer is taken as its digits, which entry 40 carries
    assert phone.cache.consumed(USER) == {"café-crème ☕ 東京", "40"}
    assert phone.cache.consumed_indexes(USER) == {2, 40}
    assert [e["item_id"] for e in phone.outbox.batch(10)] == ["café-crème ☕ 東京", "40"]
    rec = phone.recommend(USER, 24, allow_server=False)
    assert not {"café-crème ☕ 東京", "40"} & set(rec.item_ids)


def test_an_event_on_a_product_the_device_holds_no_entry_for_folds_no_vector_and_waits(phone):
    state = phone.cache.user_state(USER)
    phone.track(USER, "click", "not held here (2001)")
    after = phone.cache.user_state(USER)
    assert after.n_events == state.n_events + 1 and after.w == state.w
    np.testing.assert_array_equal(after.s, state.s)
    assert phone.cache.consumed(USER) == {"not held here (2001)"} and phone.cache.consumed_indexes(USER) == set()
    assert phone.outbox.batch(10)[0]["item_id"] == "not held here (2001)"


def test_a_product_consumed_before_its_entry_arrived_stays_out(tmp_path):
    client = EdgeClient(tmp_path / "p.sqlite", PUBLIC, transport=Memory(answer()), device_id="phone")
    client.track(USER, "purchase", "sku-0005")  # before any sync: nothing to fold with
    client.sync([USER])
    assert "sku-0005" not in client.recommend(USER, 24, allow_server=False).item_ids
    assert 5 in client.cache.consumed_indexes(USER)
    client.close()


def test_exclude_and_the_served_context_use_product_ids(phone):
    base = phone.recommend(USER, 10, allow_server=False)
    shown = base.item_ids[:2]
    rec = phone.recommend(USER, 10, context={"exclude": shown + ["unknown one"]}, allow_server=False)
    assert not set(shown) & set(rec.item_ids) and len(rec.items) == 10
    assert phone.recommend(USER, 10, context={"exclude": [40]}, allow_server=False).item_ids.count("40") == 0
    for bad in ([" padded"], [None], [1.5], "x"):
        with pytest.raises(ValidationError, match="context"):
            phone.recommend(USER, 5, context={"exclude": bad}, allow_server=False)
    phone.track(USER, "view", rec.items[0].item_id)
    phone.track(USER, "view", "sku-0029")  # not shown in that list: no context
    first, second = phone.outbox.batch(10)
    assert first["context"]["source"] == "edge" and "context" not in second


def test_the_server_s_answer_keeps_its_product_ids(tmp_path):
    server = {"user_id": USER, "model_version": MODEL, "bundle_version": 1, "items": [
        {"item_id": "SKU/0003:blue", "score": 0.9, "rank": 1, "title": "ignored: the held entry wins",
         "category": "x", "price": 1.0, "in_stock": True},
        {"item_id": "Toy Story (1995)", "score": 0.8, "rank": 2, "title": "", "category": "", "price": 1.0},
        {"item_id": "only on the server", "score": 0.7, "rank": 3, "title": "A new product", "category": "New",
         "price": 12.5, "in_stock": True},
        {"item_id": 40, "score": 0.6, "rank": 4, "title": "", "category": "", "price": 0}]}
    client = EdgeClient(tmp_path / "p.sqlite", PUBLIC, transport=Memory(answer(), server), device_id="phone")
    client.sync([USER])
    rec = client.recommend(USER, 3, context={"exclude": ["Toy Story (1995)"]})
    assert rec.source == "server" and rec.item_ids == ["SKU/0003:blue", "only on the server", "40"]
    assert [it.title for it in rec.items] == ["Blue lamp", "A new product", "Star Wars (1977)"]
    assert rec.items[1].price == 12.5 and rec.items[1].category == "New"
    client.track(USER, "click", "only on the server")
    assert client.outbox.batch(1)[0]["context"]["source"] == "server"
    client.transport.recommendations = {"items": [{"item_id": " bad", "score": 1.0}]}
    assert client.recommend(USER, 3).source == "edge"  # a malformed answer is a failed server: the device answers
    client.close()


def held(client) -> dict[int, str]:
    return dict(client.cache.query("SELECT item_id, external_id FROM items"))


BAD_ENTRIES = {
    "empty external id": ({"3": lambda: entry(3, external_id="")}, "no external id"),
    "leading space": ({"3": lambda: entry(3, external_id=" SKU")}, "external id"),
    "control character": ({"3": lambda: entry(3, external_id="SKU\n3")}, "external id"),
    "65 characters": ({"3": lambda: entry(3, external_id="x" * 65)}, "external id"),
    "two entries, one id": ({"3": lambda: entry(3, external_id="Toy Story (1995)")}, "names too"),
}


@pytest.mark.parametrize("case", sorted(BAD_ENTRIES))
def test_an_entry_with_a_bad_or_duplicate_external_id_is_refused_whole(tmp_path, case):
    edit, match = BAD_ENTRIES[case]
    body = answer()
    body["items"].update({k: make() for k, make in edit.items()})
    client = EdgeClient(tmp_path / "p.sqlite", PUBLIC, transport=Memory(body), device_id="phone")
    with pytest.raises(IntegrityError, match=match):
        client.sync([USER])
    assert client.cache.version == 0 and held(client) == {}
    client.close()


def test_an_entry_naming_a_held_product_under_another_index_is_refused(phone):
    before = held(phone)
    rec = phone.recommend(USER, 10, allow_server=False).item_ids
    body = answer(version=2)
    body["items"] = {"50": entry(50, external_id="Toy Story (1995)")}  # held as index 1, which stays
    phone.transport.body = body
    with pytest.raises(IntegrityError, match="names too"):
        phone.sync([USER])
    assert phone.cache.version == 1 and held(phone) == before
    assert phone.recommend(USER, 10, allow_server=False).item_ids == rec
    # An entry that replaces the held one of its index may carry a new id: only one index names each product.
    body["items"] = {"1": entry(1, external_id="Toy Story (1995) [remastered]")}
    assert phone.sync([USER]).version == 2
    assert held(phone)[1] == "Toy Story (1995) [remastered]"


def test_the_cli_tracks_a_product_id_with_spaces(tmp_path):
    from pocketrank.edge_runtime.cli import device

    db = str(tmp_path / "cli.sqlite")
    result = CliRunner().invoke(device, ["--db", db, "track", "u1", "click", "Toy Story (1995)"])
    assert result.exit_code == 0 and len(result.output.strip()) == 32
    result = CliRunner().invoke(device, ["--db", db, "track", "u1", "view", " padded"])
    assert result.exit_code == 1 and "item_id" in result.output
    conn = sqlite3.connect(db)
    assert [json.loads(b)["item_id"] for (b,) in conn.execute("SELECT body FROM outbox")] == ["Toy Story (1995)"]
    conn.close()


def test_a_v3_database_gets_the_index_digits_then_the_signed_ids_at_the_next_sync(tmp_path):
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    schema.migrate(conn, ArtifactFiles(f"{path}-artifacts"), target=3)
    vec = vectors()
    conn.executemany("INSERT INTO items (item_id, vector, title, category, price, in_stock, sha256, model) "
                     "VALUES (?, ?, ?, ?, 1.0, 1, ?, ?)",
                     [(i, vec[i].tobytes(), PRODUCTS[i][1], PRODUCTS[i][2], b"x" * 32, MODEL) for i in (1, 40)])
    conn.execute("INSERT INTO consumed (user_id, item_id, type) VALUES ('u1', 40, 'click')")
    conn.close()
    client = EdgeClient(path, PUBLIC, transport=Memory(answer()), device_id="phone")
    assert client.cache.schema_version == schema.LATEST == 6
    assert held(client) == {1: "1", 40: "40"}  # guessed: a catalogue from before named products by index
    assert client.cache.consumed(USER) == {"40"} and client.cache.consumed_indexes(USER) == {40}
    assert client.cache.query("SELECT COUNT(*) FROM items WHERE model IS NULL")[0][0] == 2  # to be replaced
    client.sync([USER])
    assert held(client)[1] == "Toy Story (1995)" and held(client)[40] == "40"  # the signed ids
    assert "40" not in client.recommend(USER, 24, allow_server=False).item_ids
    client.close()
