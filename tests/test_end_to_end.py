"""The demo's story against a real server process on a loopback port and a real EdgeClient."""

import sqlite3

from pocketrank.demo_app.localserver import LocalServer
from pocketrank.demo_app.scenario import DEMO_USER, story
from pocketrank.edge_runtime import EdgeClient


def test_the_whole_loop(home, tmp_path):
    key = (home / "keys" / "signing.pub").read_text().strip()
    with LocalServer(home) as server:
        client = EdgeClient(tmp_path / "device.sqlite", key, base_url=server.url, device_id="e2e-phone",
                            latency_budget=2.0)  # generous: CI machines are shared and noisy
        report = story(server, client, DEMO_USER, out=lambda *a: None)
        client.close()

    # Online, the server answered with k items.
    assert report["online"].source == "server" and len(report["online"].items) == 10
    # With the server stopped, the device reranked locally, and a click changed that ranking.
    before, after = report["offline_before"], report["offline_after"]
    assert before.source == after.source == "edge" and len(before.items) == len(after.items) == 10
    assert before.item_ids != after.item_ids
    assert not set(report["clicked"]) & set(after.item_ids)
    # After reconnecting, every queued event reached the server exactly once.
    assert report["queued"] == 3 and report["flush"].acknowledged == 3 and report["flush"].remaining == 0
    assert report["flush_again"].sent == 0
    # The server logs products by the store's int index; the device clicked product ids (strings): the
    # store's items table (sku = the product's own id) maps one to the other.
    with sqlite3.connect(home / "store.sqlite") as db:
        rows = db.execute("SELECT i.sku, COUNT(*) FROM events e LEFT JOIN items i ON i.item_id = e.item_id "
                          "WHERE e.device_id = 'e2e-phone' GROUP BY e.item_id").fetchall()
    assert sorted(rows) == sorted((i, 1) for i in report["clicked"])
    assert report["online_after"].source == "server"
