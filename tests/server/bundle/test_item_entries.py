"""Item entries at publish: unchanged entries keep their signature and version; what an answer carries."""

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pocketrank.server.bundle.item_entries import build_entries, load, save, select
from pocketrank.shared import wire

_KEY = Ed25519PrivateKey.generate()  # one key for every _build call, as the old default argument was


def _build(version, vecs, meta, model="m1", previous=None, previous_model=None, key=_KEY):
    return build_entries(np.arange(1, len(vecs) + 1), vecs, meta, model, version, key.sign, previous, previous_model)


def test_only_changed_entries_are_re_signed_and_a_new_model_changes_all(tmp_path):
    vecs = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    meta = {i: {"title": f"Item {i}", "category": "c", "price": 1.0, "in_stock": True} for i in range(1, 6)}
    v1 = _build(1, vecs, meta)
    save(tmp_path / "items.pri", v1)
    assert load(tmp_path / "items.pri") == v1
    meta[3] = {**meta[3], "price": 2.0}
    v2 = _build(2, vecs, meta, previous=load(tmp_path / "items.pri"), previous_model="m1")
    assert {i: e.changed for i, e in v2.items()} == {1: 1, 2: 1, 3: 2, 4: 1, 5: 1}
    assert v2[1] == v1[1] and v2[3].sig != v1[3].sig
    v3 = _build(3, vecs, meta, model="m2", previous=v2, previous_model="m1")
    assert all(e.changed == 3 for e in v3.values())
    assert load(tmp_path / "missing.pri") == {}


def test_select_sends_new_and_changed_items_of_a_list():
    vecs = np.zeros((6, 4), np.float32) + 1
    entries = _build(1, vecs, {})
    entries[4] = entries[4].__class__(entries[4].raw, entries[4].sha256, entries[4].sig, 3)  # changed at 3
    assert select(entries, [1, 2, 4], None, 0) == [1, 2, 4]  # nothing held: all
    assert select(entries, [1, 2, 4], [1, 2, 4], 2) == [4]  # changed after the cursor
    assert select(entries, [1, 2, 4], [1, 2, 4], 3) == []
    assert select(entries, [1, 5, 4], [1, 2, 4], 3) == [5]  # entered the list
    assert select(entries, [1], [1], 3, lacking=[6, 99]) == [6]  # asked for; 99 is not in the catalogue
    assert wire.unpack_item_entry(entries[6].raw)["item_id"] == 6
