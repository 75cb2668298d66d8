"""Publish is immune to any product a store may hold (rows from before the API's bounds, a file
import, a hand edit): one bad product never stops the bundle of every other one."""

from dataclasses import replace

from pocketrank.server.bundle import item_entries
from pocketrank.server.bundle.publish import publish_job
from pocketrank.server.home import Home
from pocketrank.shared import wire


def test_publish_packs_unusable_prices_as_none_and_leaves_out_what_cannot_travel(home, caplog):
    h = Home(home)
    store = h.store()
    items = store.get_items([1, 2, 3, 4, 5])
    store.put_items([replace(items[1], price=1e39), replace(items[2], price=float("inf")),
                     replace(items[3], price=1e300), replace(items[4], price=-5.0),
                     replace(items[5], sku="x" * 300)])  # an id longer than an entry's 255 bytes
    before = int(store.get_meta("bundle_version"))
    out = publish_job(h, progress=False)
    assert out["version"] == before + 1 and out["items_left_out"] == 1
    bundle = h.bundle_dir(out["version"])
    assert (bundle / "manifest.json").exists()
    entries = item_entries.load(bundle / item_entries.ITEMS_FILE)
    assert 5 not in entries and len(entries) == len(store.items()) - 1
    for index in (1, 2, 3, 4):
        assert wire.unpack_item_entry(entries[index].raw)["price"] == 0.0  # no price rather than a wrong one
    assert wire.unpack_item_entry(entries[6].raw)["price"] == items_price(store, 6)
    assert "left out of the bundle" in caplog.text and "stored price 1e+39" in caplog.text


def items_price(store, index: int) -> float:
    return store.get_items([index])[index].price
