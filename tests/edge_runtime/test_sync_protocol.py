"""Sync protocol v2 end to end (real Flask app, real SQLite store and device): record signatures,
list deltas, snapshots after compaction, wifi_only, and the tampering cases of issue 7."""

import base64
import dataclasses
import hashlib

import numpy as np
import pytest

from pocketrank.edge_runtime import IntegrityError, SignatureError, TransportError
from pocketrank.exporter.signing import load_private
from pocketrank.server.bundle.publish import publish_job
from pocketrank.server.home import Home
from pocketrank.server.stores.base import RecordRow
from pocketrank.shared import wire

USER = "196"


def held_raw(device, uid=USER) -> bytes:
    return wire.decompress(device.cache.candidates(uid)[0])


def put_record(home, version: int, uid: str, raw: bytes, sign_version: int | None = None) -> None:
    """Replace uid's record of `version` in the server's change log, signed with the server's key."""
    h = Home(home)
    sha = hashlib.sha256(raw).digest()
    sig = load_private(h.keys).sign(wire.record_message(version if sign_version is None else sign_version, uid, sha))
    h.store().put_records(version, {uid: RecordRow(version, wire.compress(raw), sha, sig)}, {uid: sig})


def one_percent_changed(raw: bytes) -> bytes:
    ids, scores = wire.unpack_candidates_raw(raw)
    ids = ids.copy()
    ids[[17, 117]] = [1681, 1682]  # 2 of 200 candidates replaced by items not in the list
    return wire.pack_candidates_raw(ids, scores)


class Rewriting:
    """The real transport underneath; the JSON sync answer passes through `edit` on the way."""

    def __init__(self, inner, edit):
        self.inner, self.edit = inner, edit
        self.bodies = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def get_json(self, url, timeout, params=None, headers=None, limit=None):
        status, body = self.inner.get_json(url, timeout, params, headers, limit)
        if url == "/v1/sync" and body:
            self.edit(body)
            self.bodies.append(body)
        return status, body


def test_cached_answers_follow_the_record_log(api, home):
    """Answers are cached per version and cursor; a record rewritten under the same version is served."""
    url = f"/v1/sync?cursor=0&users={USER},nobody"
    first = api.get(url)
    assert first.status_code == 200 and first.mimetype == "application/json"
    assert api.get(url).data == first.data  # the cached answer, byte for byte
    body = first.get_json()
    assert body["unknown_users"] == ["nobody"] and set(body["records"]) == {USER} and set(body["states"]) == {USER, "nobody"}
    new = one_percent_changed(wire.decompress(base64.b64decode(body["records"][USER]["data"])))
    put_record(home, body["version"], USER, new)
    entry = api.get(url).get_json()["records"][USER]
    assert entry["sha256"] == hashlib.sha256(new).hexdigest()
    assert wire.decompress(base64.b64decode(entry["data"])) == new


@pytest.fixture
def at_v2_with_delta(device, home):
    """The device holds v1; v2 changes 1% of USER's list (and nothing else)."""
    device.sync([USER])
    publish_job(Home(home), progress=False)
    new = one_percent_changed(held_raw(device))
    put_record(home, 2, USER, new)
    return new


def test_a_list_with_one_percent_changed_comes_as_a_small_delta(device, at_v2_with_delta):
    seen = Rewriting(device.transport, lambda body: None)
    device.transport = seen
    before = len(device.cache.candidates(USER)[0])
    base = hashlib.sha256(held_raw(device)).hexdigest()
    result = device.sync([USER])
    assert result.version == 2 and result.users_delta == [USER] and result.users_updated == [USER]
    entry = seen.bodies[0]["records"][USER]
    assert (entry["kind"], entry["base_sha256"], entry["base_version"]) == ("delta", base, 1)
    assert entry["sha256"] == hashlib.sha256(at_v2_with_delta).hexdigest()
    delta = base64.b64decode(entry["data"])
    assert len(delta) <= 0.10 * before  # the target: a 1% change costs at most 10% of the full list
    assert held_raw(device) == at_v2_with_delta
    ids = wire.unpack_candidates_raw(at_v2_with_delta)[0]
    assert set(device.cache.packed(USER).ids) <= set(ids.tolist()) and 1681 in device.cache.packed(USER).ids
    assert device.recommend(USER, 5, allow_server=False).source == "edge"


def test_an_unchanged_record_is_confirmed_by_the_new_signature_alone(device, home):
    device.sync([USER])
    seen = Rewriting(device.transport, lambda body: None)
    device.transport = seen
    publish_job(Home(home), progress=False)
    result = device.sync([USER])
    assert result.users_unchanged == [USER] and result.users_updated == []
    assert seen.bodies[0]["records"][USER]["kind"] == "same" and "data" not in seen.bodies[0]["records"][USER]
    assert device.cache.candidates(USER)[1] == 2


def _keeps_v1(device, before):
    assert device.cache.version == 1
    assert device.recommend(USER, 10, allow_server=False).item_ids == before


def test_a_flipped_bit_in_a_delta_frame_is_refused(device, at_v2_with_delta):
    before = device.recommend(USER, 10, allow_server=False).item_ids

    def flip(body):
        entry = body["records"][USER]
        assert entry["kind"] == "delta"
        data = bytearray(base64.b64decode(entry["data"]))
        data[-3] ^= 0x01
        entry["data"] = base64.b64encode(bytes(data)).decode()

    device.transport = Rewriting(device.transport, flip)
    with pytest.raises(IntegrityError, match=USER):
        device.sync([USER])
    _keeps_v1(device, before)


@pytest.mark.parametrize("case", ["other version", "other user"])
def test_a_record_signature_of_another_version_or_user_is_refused(device, home, app, case):
    device.sync([USER, "186"])
    before = device.recommend(USER, 10, allow_server=False).item_ids
    publish_job(Home(home), progress=False)
    store = app.extensions["pocketrank"].store
    v1 = store.record_sigs(1, [USER, "186"])

    def swap(body):
        other = v1[USER] if case == "other version" else base64.b64decode(body["records"]["186"]["sig"])
        body["records"][USER]["sig"] = base64.b64encode(other).decode()

    device.transport = Rewriting(device.transport, swap)
    with pytest.raises(SignatureError, match="does not verify for bundle 2"):
        device.sync([USER, "186"])
    _keeps_v1(device, before)


def test_a_delta_against_a_base_the_device_does_not_hold_is_not_applied(device, at_v2_with_delta):
    seen = []

    def wrong_base(body):
        entry = body["records"].get(USER, {})
        seen.append(entry.get("kind"))
        if entry.get("kind") == "delta":
            entry["base_sha256"] = "00" * 32

    device.transport = Rewriting(device.transport, wrong_base)
    result = device.sync([USER])
    # The delta was not applied; the record was asked for again whole (cursor 0) and verified.
    assert seen == ["delta", "full"] and result.users_delta == [] and result.users_updated == [USER]
    assert held_raw(device) == at_v2_with_delta


def test_decompression_beyond_the_cap_is_refused(device, home):
    device.sync([USER])
    before = device.recommend(USER, 10, allow_server=False).item_ids
    publish_job(Home(home), progress=False)
    raw = held_raw(device)
    ids, scores = wire.unpack_candidates_raw(raw)
    n = wire.MAX_RECORD_BYTES // 5 + 10  # an honest-looking record, correctly signed, just too large
    bomb = wire.pack_candidates_raw(np.resize(ids, n), np.sort(np.resize(scores, n))[::-1])
    assert len(bomb) > wire.MAX_RECORD_BYTES
    put_record(home, 2, USER, bomb)
    with pytest.raises(IntegrityError, match="above the cap"):
        device.sync([USER])
    _keeps_v1(device, before)


def test_a_cursor_older_than_the_kept_history_gets_a_snapshot(device, home, api):
    device.sync([USER, "186"])
    for _ in range(2):
        publish_job(Home(home), progress=False, keep_versions=1)
    body = api.get("/v1/sync?cursor=1&users=196").get_json()
    assert body["snapshot"] is True and "older than the kept history" in body["snapshot_reason"]
    assert body["history_from"] == 3 and body["records"][USER]["kind"] == "full"
    first = api.get("/v1/sync?cursor=0&users=196").get_json()
    assert first["snapshot"] is True and "first sync" in first["snapshot_reason"]
    result = device.sync([USER, "186"])
    assert result.version == 3 and result.snapshot and sorted(result.users_updated) == ["186", USER]
    publish_job(Home(home), progress=False, keep_versions=2)
    body = api.get("/v1/sync?cursor=3&users=196").get_json()
    assert body["snapshot"] is False and body["snapshot_reason"] is None and body["records"][USER]["kind"] == "same"
    assert api.get("/v1/sync?cursor=4&users=196").status_code == 304


def _new_model(home):
    h = Home(home)
    model_dir = h.model_dir(h.current_model())
    (model_dir / "ranker.int8.onnx").write_bytes((model_dir / "ranker.fp32.onnx").read_bytes())
    publish_job(h, progress=False)


def test_wifi_only_defers_a_version_with_a_new_model_and_the_old_one_keeps_serving(device, home):
    device.wifi_only = True
    device.sync([USER])  # a first sync has nothing to keep serving... but its model is new too: deferred
    assert device.cache.version == 0
    first = device.sync([USER], on_wifi=True)
    assert first.version == 1 and first.deferred is None
    old_sha = device.slot.sha
    before = device.recommend(USER, 10, allow_server=False)
    _new_model(home)
    result = device.sync([USER])
    assert result.deferred and "wifi_only" in result.deferred and "ranker" in result.deferred
    assert "ranker" not in result.artifacts_fetched and not result.changed
    assert device.cache.version == 1 and device.slot.sha == old_sha
    again = device.recommend(USER, 10, allow_server=False)
    assert (again.source, again.item_ids, again.candidates_version) == ("edge", before.item_ids, 1)
    on_wifi = device.sync([USER], on_wifi=True)
    assert on_wifi.version == 2 and "ranker" in on_wifi.artifacts_fetched and device.slot.sha != old_sha


def test_wifi_only_still_applies_new_lists_when_the_model_did_not_change(device, home):
    device.sync([USER], on_wifi=True)
    device.wifi_only = True
    device.track(USER, "click", 1)
    device.flush()
    publish_job(Home(home), progress=False)
    result = device.sync([USER])
    assert result.version == 2 and result.deferred is None and result.users_updated == [USER]
    assert result.artifacts_fetched == [] or "ranker" not in result.artifacts_fetched


def test_users_held_at_no_version_are_answered_whole_in_the_same_request(api):
    body = api.get("/v1/sync?cursor=1&users=196,186&without=186").get_json()
    # The device is current (cursor 1 = version 1): only the user it holds nothing for gets an answer.
    assert body["version"] == 1 and set(body["records"]) == {"186"} and body["records"]["186"]["kind"] == "full"
    assert api.get("/v1/sync?cursor=1&users=196&without=186").status_code == 400
    assert api.get("/v1/sync?cursor=1&users=196,186", headers={"If-None-Match": '"v1"'}).status_code == 304
    assert api.get("/v1/sync?cursor=1&users=196,186&without=186",
                   headers={"If-None-Match": '"v1"'}).status_code == 200  # never a 304 with `without`


# --- item entries (wire 4; PRI2 since wire 5): only the items the device's lists reference, each signed for its
# model, each mapping its index to the product's own id ---


def held_items(device) -> dict[int, bytes]:
    return dict(device.cache.query("SELECT item_id, sha256 FROM items"))


def referenced_items(device, uid=USER) -> set[int]:
    return set(wire.unpack_candidates_raw(held_raw(device, uid))[0].tolist()) | set(device.cache.manifest()["popular"])


def test_a_first_sync_brings_the_candidates_and_popular_items_only(device, home):
    result = device.sync([USER])
    held = held_items(device)
    assert set(held) == referenced_items(device) == set(result.items_received)
    assert len(held) < len(Home(home).store().items())  # not the catalogue
    rec = device.recommend(USER, 10, allow_server=False)
    assert rec.source == "edge" and all(it.title for it in rec.items)
    assert device.recommend("someone-new", 5, allow_server=False).source == "popular"


def test_a_republish_sends_only_the_changed_items_and_drops_those_that_left_every_list(device, home):
    device.sync([USER])
    h = Home(home)
    ids = wire.unpack_candidates_raw(held_raw(device))[0]
    store = h.store()
    changed = store.get_items([int(ids[5])])[int(ids[5])]
    store.put_items([dataclasses.replace(changed, title=changed.title + " (restored)")])
    publish_job(h, progress=False)
    new = one_percent_changed(held_raw(device))
    put_record(home, 2, USER, new)
    left = set(ids[[17, 117]].tolist()) - set(device.cache.manifest()["popular"])
    seen = Rewriting(device.transport, lambda body: None)
    device.transport = seen
    result = device.sync([USER])
    assert result.version == 2
    # The changed item, and the two that entered the list; not the other 197.
    assert set(seen.bodies[0]["items"]) == {str(int(ids[5])), "1681", "1682"}
    assert set(result.items_dropped) == left and not left & set(held_items(device))
    assert device.cache.item_meta([int(ids[5])])[int(ids[5])]["title"].endswith("(restored)")
    assert set(held_items(device)) == referenced_items(device)


def test_entries_held_under_another_model_are_dropped_and_asked_for_again(device, home):
    device.sync([USER])
    with device.cache.tx() as conn:  # as items held from wire 3's artifacts: no model
        conn.execute("UPDATE items SET model = NULL")
    publish_job(Home(home), progress=False)  # nothing changed: the answer carries no item entries
    seen = Rewriting(device.transport, lambda body: None)
    device.transport = seen
    device.sync([USER])
    assert seen.bodies[0]["items"] == {}
    assert len(seen.bodies) == 2 and len(seen.bodies[1]["items"]) == len(referenced_items(device))
    assert set(held_items(device)) == referenced_items(device)
    assert device.recommend(USER, 10, allow_server=False).source == "edge"


def _first_item(body):
    return next(iter(body["items"]))


def _resign(home, body, model=None, data=None):
    """Replace the first item entry with `data` (raw PRI2), signed by the server's key for `model`."""
    key = _first_item(body)
    manifest = __import__("json").loads(base64.b64decode(body["manifest"]))
    raw = data if data is not None else base64.b64decode(body["items"][key]["data"])
    msg = wire.item_message(model or manifest["model_version"], int(key), hashlib.sha256(raw).digest())
    body["items"][key] = {"data": base64.b64encode(raw).decode(),
                          "sig": base64.b64encode(load_private(Home(home).keys).sign(msg)).decode()}


def _flip_sig(body):
    e = body["items"][_first_item(body)]
    sig = bytearray(base64.b64decode(e["sig"]))
    sig[0] ^= 1
    e["sig"] = base64.b64encode(bytes(sig)).decode()


def _flip_data(body):
    e = body["items"][_first_item(body)]
    data = bytearray(base64.b64decode(e["data"]))
    data[-1] ^= 1
    e["data"] = base64.b64encode(bytes(data)).decode()


ITEM_TAMPERING = {
    "forged signature": (_flip_sig, SignatureError, "signature of item"),
    "tampered entry": (_flip_data, SignatureError, "signature of item"),
    "signed for another model": (lambda h, b: _resign(h, b, model="m-other"), SignatureError, "for model"),
    "another item's id inside": (lambda h, b: _resign(h, b, data=wire.pack_item_entry(
        -7, np.ones(64, np.float32))), IntegrityError, "carries item id"),
    "another dim": (lambda h, b: _resign(h, b, data=wire.pack_item_entry(
        int(_first_item(b)), np.ones(3, np.float32), external_id="x")), IntegrityError, "dim"),
    "no external id": (lambda h, b: _resign(h, b, data=wire.pack_item_entry(
        int(_first_item(b)), np.ones(64, np.float32))), IntegrityError, "no external id"),
    "an invalid external id": (lambda h, b: _resign(h, b, data=wire.pack_item_entry(
        int(_first_item(b)), np.ones(64, np.float32), external_id="Toy Story (1995) ")), IntegrityError,
        "external id"),
    "another held product's id": (lambda h, b: _resign(h, b, data=wire.pack_item_entry(
        int(_first_item(b)), np.ones(64, np.float32), external_id=b["_held_other"])), IntegrityError, "names too"),
    "too many entries": (lambda h, b: b["items"].update({str(10**6 + i): {"data": "", "sig": ""} for i in range(20_000)}),
                         IntegrityError, "above the cap"),
}


@pytest.mark.parametrize("case", sorted(ITEM_TAMPERING))
def test_a_bad_item_entry_is_refused_and_the_previous_state_kept(device, home, case):
    device.sync([USER])
    h = Home(home)
    ids = wire.unpack_candidates_raw(held_raw(device))[0]
    store = h.store()
    item = store.get_items([int(ids[0])])[int(ids[0])]
    store.put_items([dataclasses.replace(item, price=item.price + 1)])
    publish_job(h, progress=False)
    before = device.recommend(USER, 10, allow_server=False).item_ids
    items_before = held_items(device)
    edit, error, match = ITEM_TAMPERING[case]
    # A product id the device holds under another index than the first entry's (one that stays held).
    names = dict(device.cache.query("SELECT item_id, external_id FROM items"))

    def rewrite(body):
        first = int(_first_item(body))
        body["_held_other"] = next(e for i, e in sorted(names.items()) if i != first and str(i) not in body["items"])
        edit(body) if case in ("forged signature", "tampered entry") else edit(home, body)

    device.transport = Rewriting(device.transport, rewrite)
    with pytest.raises(error, match=match):
        device.sync([USER])
    _keeps_v1(device, before)
    assert held_items(device) == items_before


@pytest.mark.parametrize("items", ["x", "1,,2x", ",".join(str(i) for i in range(2001)), "3000000000"])
def test_bad_lacking_item_lists_are_400(api, items):
    resp = api.get(f"/v1/sync?cursor=0&users={USER}&items={items}")
    assert resp.status_code == 400 and resp.get_json()["field"] == "items"


def test_lacking_items_are_sent_and_rule_out_a_304(api):
    v = api.get(f"/v1/sync?cursor=0&users={USER}").get_json()["version"]
    assert api.get(f"/v1/sync?cursor={v}&users={USER}").status_code == 304
    body = api.get(f"/v1/sync?cursor={v}&users={USER}&items=1,2,999999").get_json()
    assert set(body["items"]) == {"1", "2"}  # an id the catalogue lacks is left out
    assert api.get(f"/v1/artifacts/{v}/items.pri").status_code == 404  # the server's item file is not an artifact



class SwappedModel:
    """A man in the middle who answers one version's ranker download with another bundle's ranker:
    a real model, signed in its own manifest, but not the one this version binds."""

    def __init__(self, inner, version: int, other: bytes):
        self.inner, self.prefix, self.other = inner, f"/v1/artifacts/{version}/", other

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def get_bytes(self, url, timeout, start=0, limit=None):
        if url.startswith(self.prefix) and "ranker" in url:
            if limit is not None and len(self.other) > limit:  # what the real transport does past the limit
                raise IntegrityError(f"GET {url}: the body runs past the declared {limit} bytes; refused")
            return self.other, False
        return self.inner.get_bytes(url, timeout, start, limit)


def test_a_model_from_another_manifest_is_refused_and_the_held_one_keeps_serving(device, home):
    h = Home(home)
    ranker = h.model_dir(h.current_model()) / "ranker.int8.onnx"
    int8, fp32 = ranker.read_bytes(), (ranker.parent / "ranker.fp32.onnx").read_bytes()
    ranker.write_bytes(fp32)  # version 2 ships a bigger model ...
    publish_job(h, progress=False)
    assert device.sync([USER]).version == 2
    ranker.write_bytes(int8)  # ... and version 3 the small one again
    publish_job(h, progress=False)
    before = device.recommend(USER, 10, allow_server=False)
    honest = device.transport
    # Longer than version 3 declares: refused as the bytes run over.
    device.transport = SwappedModel(honest, 3, fp32)
    with pytest.raises(IntegrityError, match="past the declared"):
        device.sync([USER])
    assert device.cache.version == 2
    # Shorter than declared: kept as a partial download, and the resumed download then fails its sha256,
    # so the partial is dropped and the next sync starts over; at no point is anything of version 3 applied.
    device.transport = SwappedModel(honest, 3, int8[: len(int8) // 2] + fp32[:100])
    with pytest.raises(TransportError):
        device.sync([USER])
    assert device.cache.version == 2
    after = device.recommend(USER, 10, allow_server=False)
    assert after.source == before.source == "edge" and after.item_ids == before.item_ids
    device.transport = honest
    for _ in range(2):
        try:
            if device.sync([USER]).version == 3:
                break
        except IntegrityError as exc:
            assert "sha256 mismatch" in str(exc)  # the poisoned partial, dropped
            assert device.cache.version == 2
    assert device.cache.version == 3
