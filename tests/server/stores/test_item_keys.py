"""The store's product id -> index mapping, on SQLite and on a real redis-server (the `store` fixture)."""

import numpy as np

from pocketrank.shared.schemas import Event, Item, validate_item


def product(sku, title="A thing", category="Home > Kitchen", **kw):
    return validate_item({"item_id": sku, "title": title, "category": category, **kw})


def test_new_products_get_fresh_indexes_that_never_change(store):
    first = store.put_items([product("sku-1"), product("Toy Story (1995)"), product("café ☕")])
    idx = {it.sku: it.item_id for it in first}
    assert sorted(idx.values()) == [1, 2, 3]
    # An update keeps the index; a new product takes the next one, never a used one.
    again = store.put_items([product("café ☕", title="Renamed", price=3.5), product("sku-4")])
    assert again[0].item_id == idx["café ☕"] and again[1].item_id == 4
    assert store.item_index(["sku-1", "café ☕", "nope"]) == {"sku-1": idx["sku-1"], "café ☕": idx["café ☕"]}
    stored = store.get_items([idx["café ☕"]])[idx["café ☕"]]
    assert (stored.sku, stored.title, stored.price, stored.categories) == ("café ☕", "Renamed", 3.5,
                                                                           ("Home", "Home > Kitchen"))


def test_every_field_of_a_product_round_trips(store):
    it = product("SKU/0003:blue", currency="EUR", stock=0, attributes={"colour": "blue", "size": 42},
                 created_at=1_700_000_000)
    [stored] = store.put_items([it])
    got = store.items()[0]
    assert got == stored and got.in_stock is False and got.currency == "EUR"
    assert dict(got.attributes) == {"colour": "blue", "size": "42"} and got.created_at == 1_700_000_000.0
    assert got.to_dict()["item_id"] == "SKU/0003:blue"


def test_explicit_indexes_push_the_counter_past_them(store):
    store.put_items([Item(40, "Old", "c")], {40: np.ones(4, np.float32)})
    [new] = store.put_items([product("fresh")])
    assert new.item_id == 41 and store.item_index(["40"]) == {"40": 40}


def test_imported_events_count_only_new_ones(store):
    [it] = store.put_items([product("sku-1")])
    events = [Event(f"e{i}", "u1", "d", "click", 1_700_000_000.0 + i, it.item_id) for i in range(3)]
    assert store.import_events(events) == 3
    assert store.import_events(events[1:] + [Event("e9", "u1", "d", "view", 1_700_000_100.0, it.item_id)]) == 1
    users, items, ts, _types = store.interactions(("click",))
    assert list(users) == ["u1"] * 3 and list(items) == [it.item_id] * 3 and list(ts) == sorted(ts)


def test_profiles_round_trip(store):
    store.put_profiles({"u1": {"age_band": "18-24"}, "u2": {"plan": "gold"}})
    store.put_profiles({"u1": {"age_band": "25-34"}})
    assert store.profiles() == {"u1": {"age_band": "25-34"}, "u2": {"plan": "gold"}}


def test_the_log_head_is_the_newest_position(store):
    assert store.log_head() == 0
    [it] = store.put_items([product("sku-1")])
    store.append_events([Event(f"h{i}", "u1", "d", "click", 1_700_000_000.0 + i, it.item_id) for i in range(3)])
    assert store.log_head() == max(e.pos for e in store.iter_log()) > 0


def test_an_explicit_index_in_the_same_batch_is_never_handed_out_again(store):
    got = store.put_items([product("a"), Item(1, "X", "c", sku="x")])
    assert len({it.item_id for it in got}) == 2
    assert store.item_index(["a", "x"]) == {it.sku: it.item_id for it in got}
