"""The demo phone (demo_app/device.py) names products by their own string ids end to end, without a server:
the SDK's sync answer comes from memory (tests/edge_runtime/test_product_ids.py's signed bundle)."""

import pytest

from pocketrank.demo_app.device import Device
from pocketrank.edge_runtime import ValidationError
from tests.edge_runtime.test_product_ids import PUBLIC, USER, Memory, answer


@pytest.fixture
def phone(tmp_path):
    device = Device(tmp_path / "phone.sqlite", PUBLIC, "http://127.0.0.1:9", [USER], k=24)
    device.client.transport = Memory(answer())
    assert device.sync()["error"] is None
    yield device
    device.close()


def test_the_feed_its_clicks_and_search_use_product_ids(phone):
    shown = phone.feed(USER)
    assert shown["source"] == "edge"  # the server is unreachable: the on-device rerank
    ids = [it["item_id"] for it in shown["items"]]
    assert all(isinstance(i, str) for i in ids) and "Toy Story (1995)" in ids
    impressions = [e for e in phone.tracked() if e["type"] == "impression"]
    assert [e["item_id"] for e in impressions] == ids
    phone.act(USER, "purchase", "Toy Story (1995)", list_id=shown["list_id"])
    bought = phone.tracked()[-1]
    assert bought["item_id"] == "Toy Story (1995)" and bought["price"] == 6.0  # the entry's price, by its id
    assert "Toy Story (1995)" not in [it["item_id"] for it in phone.feed(USER)["items"]]
    assert phone.client.transport.posted[-1]["item_id"] == "Toy Story (1995)"  # uploaded as the product's id
    phone.act(USER, "view", 40)  # an integer from an old page: its digits, which entry 40 carries
    assert phone.tracked()[-1]["item_id"] == "40"
    found = phone.search("toy story")
    assert found == [{"item_id": "Toy Story (1995)", "title": "Toy Story (1995)", "category": "Animation",
                      "price": 6.0}]
    with pytest.raises(ValidationError, match="item_id"):
        phone.act(USER, "click", " padded")
