"""Issue 8: the canary model reaches canary users' devices through the sync manifest (server/bundle/variants.py).

Real Flask app, real EdgeClient over httpx's WSGI transport, real onnxruntime and SQLite. The canary
is a derived model version (lab/served_models.py) with its item vectors shuffled and its
int8 ranker re-saved with another doc string (the same function, other bytes), so a device that
installs it visibly downloads another ranker and holds other item vectors.
"""

from __future__ import annotations

import base64
import json
import shutil

import httpx
import numpy as np
import onnx
import pytest

from lab.served_models import derive_version
from pocketrank.edge_runtime import EdgeClient, SignatureError
from pocketrank.edge_runtime.transport import Transport
from pocketrank.server.bundle import item_entries, sync_answer, variants
from pocketrank.server.bundle.publish import publish_job
from pocketrank.server.home import Home
from pocketrank.server.jobs import rollout
from pocketrank.server.monitoring import collector, source
from pocketrank.server.online.versions import version_vectors
from pocketrank.server.release import canary
from pocketrank.server.release.registry import Registry
from pocketrank.shared import wire
from tests.edge_runtime.test_sync_protocol import Rewriting

pytestmark = pytest.mark.slow  # see `make test-fast`

CANARY = "m-canary"
SHARE = 0.5
ROLLOUT_ID = f"{CANARY}-canary-1"  # the registry names the first rollout of a version so
USERS = [str(u) for u in range(1, 944)]
INSIDE = [u for u in USERS if canary.in_canary(u, ROLLOUT_ID, SHARE)]
OUTSIDE = [u for u in USERS if not canary.in_canary(u, ROLLOUT_ID, SHARE)]


def _sha(path) -> str:
    return wire.sha256_hex(path.read_bytes())


@pytest.fixture
def canary_model(app, home):
    """(store, live model) with CANARY derived and registered, not yet started."""
    store = app.extensions["pocketrank"].store
    live = store.get_meta("current_model")
    derive_version(home, store, CANARY, shuffle_seed=1)
    path = home / "models" / CANARY / "ranker.int8.onnx"
    m = onnx.load(str(path))
    m.doc_string = "the canary's copy"
    onnx.save(m, str(path))
    Registry(home).register(CANARY, lineage={"parent": live})
    return store, live


def _start(home, store, share=SHARE) -> dict:
    ro = rollout.start(home, store, CANARY, share)
    assert ro["rollout_id"] == ROLLOUT_ID
    assert ro["device_variant"]["model_version"] == CANARY and "error" not in ro["device_variant"], ro
    return ro


@pytest.fixture
def device(app, home, tmp_path):
    """device(name): an EdgeClient on this app with its own SQLite cache, closed when the test ends."""
    made = []

    def make(name: str) -> EdgeClient:
        transport = Transport(client=httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://test"))
        path = tmp_path / f"{name}.sqlite"
        made.append(EdgeClient(path, (home / "keys" / "signing.pub").read_text().strip(), transport=transport,
                               device_id=name))
        return made[-1]

    yield make
    for d in made:
        d.close()


def _held(device) -> dict:
    snap = device.cache.snapshot()
    models = {m for (m,) in device.cache.query("SELECT DISTINCT model FROM items")}
    return {"version": snap.version, "model": snap.model_version, "ranker": snap.ranker_sha, "item_models": models}


def _list(device, user) -> set[int]:
    return set(wire.unpack_candidates(device.cache.candidates(user)[0])[0].tolist())


def _vectors_match(device, model_dir, atol=2e-3) -> bool:
    """Every held item's vector is `model_dir`'s (to f16 precision)."""
    ids, vecs = version_vectors(model_dir)
    pos = {int(i): k for k, i in enumerate(ids)}
    held = device.cache.query("SELECT item_id, vector FROM items")
    assert held
    return all(np.allclose(np.frombuffer(v, "<f4"), vecs[pos[i]], atol=atol) for i, v in held)


def test_a_canary_reaches_canary_users_devices_and_their_events_count_in_its_arm(app, home, canary_model, device):
    store, live = canary_model
    inside, outside = INSIDE[0], OUTSIDE[0]
    dev_in, dev_out = device("in"), device("out")
    for dev, user in ((dev_in, inside), (dev_out, outside)):
        assert dev.sync([user]).version == 1
        assert _held(dev)["model"] == live
    ro = _start(home, store)
    live_ranker = _sha(home / "models" / live / "ranker.int8.onnx")
    canary_ranker = _sha(home / "models" / CANARY / "ranker.int8.onnx")
    assert live_ranker != canary_ranker
    # The canary user's device switches at the same bundle version: the canary's ranker, its item entries.
    r = dev_in.sync([inside])
    assert r.changed and r.version == 1 and "ranker" in r.artifacts_fetched and r.items_received
    assert _held(dev_in) == {"version": 1, "model": CANARY, "ranker": canary_ranker, "item_models": {CANARY}}
    assert _vectors_match(dev_in, home / "models" / CANARY)
    assert not _vectors_match(dev_in, home / "models" / live)
    # ... and it is current now: a 304, no switching back and forth.
    again = dev_in.sync([inside])
    assert not again.changed and _held(dev_in)["model"] == CANARY
    # Users outside the share: the live model, untouched.
    assert not dev_out.sync([outside]).changed
    assert _held(dev_out) == {"version": 1, "model": live, "ranker": live_ranker, "item_models": {live}}
    # Offline, the device reranks with the canary and says so; the events it uploads carry the canary.
    rec = dev_in.recommend(inside, 10, allow_server=False)
    assert rec.source == "edge" and rec.model_version == CANARY
    rec_out = dev_out.recommend(outside, 10, allow_server=False)
    assert rec_out.source == "edge" and rec_out.model_version == live
    for dev, user, r_ in ((dev_in, inside, rec), (dev_out, outside, rec_out)):
        dev.track(user, "impression", r_.items[0].item_id)
        dev.track(user, "click", r_.items[0].item_id)
        assert dev.flush().acknowledged == 2
    events = source.events_after(store, ro["stage_from"])
    by_user = {e.user_id: dict(e.context) for e in events if e.type == "click"}
    assert by_user[inside]["model_version"] == CANARY and by_user[inside]["source"] == "edge"
    assert by_user[outside]["model_version"] == live
    # The canary job's arms (same hash) and the collector's model segment both see the edge events.
    control, arm = canary.split_units(collector.per_user(events), ROLLOUT_ID, SHARE)
    assert arm.ctr.users == 1 and control.ctr.users == 1
    by_model = app.test_client().get("/v1/metrics/summary?window=3600").get_json()["by_segment"]["model_version"]
    assert CANARY in by_model and live in by_model


def test_the_local_rerank_uses_the_canary_vectors(app, home, canary_model, device):
    """The same user on two devices, one switched to the canary: the shuffled vectors give another order."""
    store, live = canary_model
    user = INSIDE[0]
    a = device("a")
    a.sync([user])
    before = a.recommend(user, 10, allow_server=False)
    _start(home, store)
    a.sync([user])
    after = a.recommend(user, 10, allow_server=False)
    assert before.source == after.source == "edge"
    assert before.model_version == live and after.model_version == CANARY
    assert before.item_ids != after.item_ids
    # The state it reranks with is the canary's fold of the user's recent events, as the server ranks them.
    body = app.test_client().get(f"/v1/sync?cursor=0&users={user}").get_json()
    state = wire.unpack_state(base64.b64decode(body["states"][user]))
    assert json.loads(base64.b64decode(body["manifest"]))["model_version"] == CANARY
    live_state = app.extensions["pocketrank"].store.user_state(user, len(state.s))
    assert state.w > 0 and not np.allclose(state.s, live_state.s)


def test_a_rollback_returns_the_device_to_the_live_model_at_the_same_version(app, home, canary_model, device):
    store, live = canary_model
    user = INSIDE[1]
    dev = device("d")
    dev.sync([user])
    live_items = {i: bytes(h) for i, h in dev.cache.query("SELECT item_id, sha256 FROM items")}
    live_state = _held(dev)
    _start(home, store)
    dev.sync([user])
    assert _held(dev)["model"] == CANARY
    Registry(home).rollback(CANARY, "test: CTR z=-4")
    r = dev.sync([user])
    assert r.changed and r.version == 1  # not a 304 that leaves it on the canary
    assert _held(dev) == live_state
    assert {i: bytes(h) for i, h in dev.cache.query("SELECT item_id, sha256 FROM items")} == live_items
    assert dev.recommend(user, 10, allow_server=False).model_version == live
    assert not dev.sync([user]).changed


def test_a_promotion_keeps_canary_devices_and_moves_the_others_then_publish_carries_on(app, home, canary_model,
                                                                                          device):
    store, live = canary_model
    inside, outside = INSIDE[2], OUTSIDE[2]
    dev_in, dev_out = device("in"), device("out")
    dev_out.sync([outside])
    _start(home, store)
    dev_in.sync([inside])
    assert _held(dev_in)["model"] == CANARY and _held(dev_out)["model"] == live
    Registry(home).promote(CANARY, "test")
    assert not dev_in.sync([inside]).changed and _held(dev_in)["model"] == CANARY
    r = dev_out.sync([outside])
    assert r.changed and r.version == 1 and _held(dev_out)["model"] == CANARY
    # The next publish (on the re-based store) builds the live bundle from the promoted model; a device that
    # held its variant keeps its item entries (only changed ones come), the others get them all.
    assert rollout._rebase(home, store, CANARY, None, False)["status"] == "rebased"
    assert publish_job(Home(home), progress=False)["version"] == 2
    for dev, user in ((dev_in, inside), (dev_out, outside)):
        held_before = {i: bytes(h) for i, h in dev.cache.query("SELECT item_id, sha256 FROM items")}
        lists_before = (_list(dev, user), set(dev.cache.popular()))
        r = dev.sync([user])
        assert r.version == 2 and _held(dev)["model"] == CANARY and "ranker" not in r.artifacts_fetched
        after = {i: bytes(h) for i, h in dev.cache.query("SELECT item_id, sha256 FROM items")}
        # The server selects per list (a user's, the popular one): an unchanged entry of an item that stayed in
        # every list it is in must not come again (the re-base moved this user's state, so many entered it).
        lists_after = (_list(dev, user), set(dev.cache.popular()))
        entered = (lists_after[0] - lists_before[0]) | (lists_after[1] - lists_before[1])
        kept = [i for i in lists_after[0] | lists_after[1] if i not in entered and held_before.get(i) == after.get(i)]
        resent_same = [i for i in r.items_received if i in kept]
        assert kept and resent_same == [], f"{len(resent_same)} of {len(kept)} unchanged entries were sent again"
    assert "rollout" not in json.loads(dev_in.cache.get("manifest"))  # the live manifest now


def test_a_publish_during_a_rollout_builds_the_variant_first(app, home, canary_model, device):
    store, live = canary_model
    user = INSIDE[3]
    dev = device("d")
    dev.sync([user])
    _start(home, store)
    dev.sync([user])
    result = publish_job(Home(home), progress=False)
    assert result["canary_variant"]["model_version"] == CANARY and "error" not in result["canary_variant"]
    r = dev.sync([user])
    assert r.version == 2 and _held(dev)["model"] == CANARY and r.artifacts_fetched == []
    # Nothing changed in the catalogue: no item entry comes again (the variant kept their signatures).
    assert r.items_received == []
    manifest = json.loads(dev.cache.get("manifest"))
    assert manifest["version"] == 2 and manifest["rollout"] == {"rollout_id": ROLLOUT_ID, "share": SHARE}


def test_a_device_with_users_in_and_out_of_the_canary_stays_on_live(app, home, canary_model, device):
    store, live = canary_model
    dev = device("d")
    _start(home, store)
    dev.sync([INSIDE[4], OUTSIDE[4]])
    assert _held(dev)["model"] == live
    assert not dev.sync([INSIDE[4], OUTSIDE[4]]).changed


def test_sync_answers_per_variant(app, home, canary_model):
    """ETags differ per variant; 304 only for the held variant; the records are shared, the entries are not."""
    store, live = canary_model
    api = app.test_client()
    user = INSIDE[5]
    live_body = api.get(f"/v1/sync?cursor=0&users={user}").get_json()
    _start(home, store)
    resp = api.get(f"/v1/sync?cursor=0&users={user}")
    body = resp.get_json()
    assert resp.headers["ETag"] == f'"v1-{CANARY}"'
    assert json.loads(base64.b64decode(body["manifest"]))["model_version"] == CANARY
    assert body["artifacts"]["ranker"] == f"/v1/artifacts/1/canary/{CANARY}/ranker.int8.onnx"
    assert api.get(body["artifacts"]["ranker"]).data == (home / "models" / CANARY / "ranker.int8.onnx").read_bytes()
    assert body["records"] == live_body["records"]  # candidate records carry no model: one for both variants
    assert set(body["items"]) == set(live_body["items"])
    assert all(body["items"][i]["sig"] != live_body["items"][i]["sig"] for i in body["items"])
    # Held canary: 304. Held live (said, or assumed without `model`): the canary variant, every entry again.
    r304 = api.get(f"/v1/sync?cursor=1&users={user}&model={CANARY}", headers={"If-None-Match": '"v1"'})
    assert r304.status_code == 304 and r304.headers["ETag"] == f'"v1-{CANARY}"'
    for q in (f"&model={live}", ""):
        switched = api.get(f"/v1/sync?cursor=1&users={user}{q}")
        assert switched.status_code == 200 and switched.headers["ETag"] == f'"v1-{CANARY}"'
        sb = switched.get_json()
        assert sb["records"][user]["kind"] == "same" and set(sb["items"]) == set(body["items"])
    # Outside the share, the live answer and ETag, as before any canary.
    out = api.get(f"/v1/sync?cursor=0&users={OUTSIDE[5]}")
    assert out.headers["ETag"] == '"v1"'
    assert json.loads(base64.b64decode(out.get_json()["manifest"]))["model_version"] == live
    # A held canary after a rollback: the live answer (the per-worker cache keys by variant, never mixing them).
    Registry(home).rollback(CANARY, "test")
    back = api.get(f"/v1/sync?cursor=1&users={user}&model={CANARY}")
    assert back.status_code == 200 and back.headers["ETag"] == '"v1"'
    assert back.get_json()["manifest"] == live_body["manifest"]
    assert {i: e["sig"] for i, e in back.get_json()["items"].items()} == \
        {i: e["sig"] for i, e in live_body["items"].items()}


def test_a_variant_gone_between_choosing_and_reading_answers_live(app, home, canary_model, monkeypatch):
    """A rebuild swaps the variant's directory (build_variant: two os.replace) and a removal drops it: a sync
    that chose the variant an instant before answers with the live bundle, never a 5xx."""
    store, live = canary_model
    api = app.test_client()
    user = INSIDE[8]
    live_body = api.get(f"/v1/sync?cursor=0&users={user}").get_json()
    ro = _start(home, store)
    vdir = variants.variant_dir(home / "bundles" / "1", CANARY)
    real_choose = variants.choose

    def choose_then_remove(*args):  # the seam: the variant's directory goes right after the request chose it
        model = real_choose(*args)
        shutil.rmtree(vdir)
        return model

    def assert_live(resp):
        assert resp.status_code == 200 and resp.headers["ETag"] == '"v1"', resp.get_data(as_text=True)[:300]
        body = resp.get_json()
        assert body["manifest"] == live_body["manifest"] and body["signature"] == live_body["signature"]
        assert {i: e["sig"] for i, e in body["items"].items()} == {i: e["sig"] for i, e in live_body["items"].items()}

    with monkeypatch.context() as m:
        m.setattr(variants, "choose", choose_then_remove)
        assert_live(api.get(f"/v1/sync?cursor=0&users={user}"))
    assert not vdir.exists()
    # Rebuilt, then caught between the manifest's stat and its signature's read (as if swapped right then):
    # the live bundle again, not a 500; once whole, the variant serves.
    variants.build_variant(Home(home), 1, CANARY, ro, store=store)
    sig = (vdir / "manifest.sig").read_bytes()
    (vdir / "manifest.sig").unlink()
    assert_live(api.get(f"/v1/sync?cursor=0&users={user}"))
    assert sync_answer.manifest_for(vdir, 1, CANARY, missing_ok=True) is None
    (vdir / "manifest.sig").write_bytes(sig)
    resp = api.get(f"/v1/sync?cursor=0&users={user}")
    assert resp.status_code == 200 and resp.headers["ETag"] == f'"v1-{CANARY}"'


@pytest.mark.parametrize("model", ["", ".hidden", "a b", "m%2Fx", "x" * 256, "-dash", "m,n"])
def test_bad_model_values_are_400(api, model):
    resp = api.get(f"/v1/sync?cursor=1&users=196&model={model}")
    assert resp.status_code == 400 and resp.get_json()["field"] == "model", resp.get_data(as_text=True)


def test_variant_artifact_urls_never_answer_5xx(api):
    for url in ("/v1/artifacts/1/canary/nope/ranker.int8.onnx", "/v1/artifacts/1/canary/..%2F..%2Fkeys/signing.key",
                "/v1/artifacts/1/canary/.hidden/ranker.int8.onnx", "/v1/artifacts/99/canary/m/ranker.int8.onnx"):
        assert api.get(url).status_code in (400, 404), url


def _live_entries_for_canary(home):
    live_entries = item_entries.load(home / "bundles" / "1" / item_entries.ITEMS_FILE)

    def edit(body):
        for key in body["items"]:
            e = live_entries[int(key)]
            body["items"][key] = {"data": base64.b64encode(e.raw).decode(), "sig": base64.b64encode(e.sig).decode()}
    return edit


def _flip_manifest_sig(body):
    sig = bytearray(base64.b64decode(body["signature"]))
    sig[5] ^= 1
    body["signature"] = base64.b64encode(bytes(sig)).decode()


@pytest.mark.parametrize("case", ["canary manifest signature", "live entries with the canary manifest"])
def test_a_tampered_canary_answer_is_refused_and_the_held_live_state_serves(app, home, canary_model, device, case):
    store, live = canary_model
    user = INSIDE[6]
    dev = device("d")
    dev.sync([user])
    before_state, before = _held(dev), dev.recommend(user, 10, allow_server=False)
    _start(home, store)
    edit, match = ((_flip_manifest_sig, "signature does not match") if case == "canary manifest signature"
                   else (_live_entries_for_canary(home), f"does not verify for model '{CANARY}'"))
    honest = dev.transport
    dev.transport = Rewriting(honest, edit)
    with pytest.raises(SignatureError, match=match):
        dev.sync([user])
    assert dev.transport.bodies and json.loads(base64.b64decode(dev.transport.bodies[0]["manifest"]))[
        "model_version"] == CANARY
    assert _held(dev) == before_state
    after = dev.recommend(user, 10, allow_server=False)
    assert after.model_version == live and after.item_ids == before.item_ids
    dev.transport = honest  # the honest answer is then applied
    assert dev.sync([user]).changed and _held(dev)["model"] == CANARY


def test_the_variant_builder_refuses_what_it_cannot_build(home, canary_model):
    from pocketrank.shared.errors import ValidationError

    store, live = canary_model
    ro = {"rollout_id": "r", "share": 0.1}
    with pytest.raises(ValidationError, match="live model already"):
        variants.build_variant(Home(home), 1, live, ro, store=store)
    with pytest.raises(ValidationError, match="no manifest"):
        variants.build_variant(Home(home), 7, CANARY, ro, store=store)
    (home / "models" / CANARY / "encoder.onnx").unlink()
    with pytest.raises(ValidationError, match="encoder.onnx"):
        variants.build_variant(Home(home), 1, CANARY, ro, store=store)
    failed = variants.build_for_rollout(Home(home), 1, {**ro, "version": CANARY}, store=store)
    assert failed["status"] == "failed" and "encoder.onnx" in failed["error"]
    assert not variants.exists(home / "bundles" / "1", CANARY)


def test_choose_routes_like_the_serving_layer():
    data = {"versions": {"m1": {"state": "live"}, "m2": {"state": "canary"}},
            "rollout": {"rollout_id": ROLLOUT_ID, "version": "m2", "share": SHARE}}
    assert variants.choose(data, INSIDE[:3], "m0") == "m2"
    assert variants.choose(data, OUTSIDE[:3], "m0") == "m1"
    assert variants.choose(data, [INSIDE[0], OUTSIDE[0]], "m0") == "m1"  # mixed: live
    assert variants.choose({"versions": {}, "rollout": None}, INSIDE[:3], "m0") == "m0"
    assert variants.etag(3, None) == '"v3"' and variants.etag(3, "m2") == '"v3-m2"'


def test_a_later_round_from_another_variant_gives_records_only_and_the_next_sync_settles(app, home, canary_model,
                                                                                           device):
    """A device on the canary whose lagging user routes to live: that round's answer (the live variant of the
    held version) gives the user's record, never its entries or states; the next sync lists both users in
    its first round, a mixed device, and settles it on live."""
    store, live = canary_model
    a, b = OUTSIDE[7], INSIDE[7]
    dev = device("d")
    dev.sync([a])
    _start(home, store)
    publish_job(Home(home), progress=False)
    dev.sync([b])  # b alone: the canary at version 2; a is still held at version 1
    assert _held(dev)["model"] == CANARY and dev.cache.candidates(a)[1] == 1
    r = dev.sync([a, b])
    assert _held(dev)["model"] == CANARY and _held(dev)["version"] == 2
    assert dev.cache.candidates(a)[1] == 2 and a in r.users_updated + r.users_unchanged
    assert _held(dev)["item_models"] == {CANARY}  # no live entry mixed in
    dev.sync([a, b])
    assert _held(dev)["model"] == live and _held(dev)["item_models"] == {live}
