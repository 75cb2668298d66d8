"""Thirty simulated days without a network (an injected clock): the outbox stays within its bounds,
keeps every purchase, reports what it dropped, and uploads the rest exactly once when the network returns."""

import random
import time

import httpx

from pocketrank.edge_runtime import EdgeClient
from pocketrank.edge_runtime.outbox import DROP_ORDER
from pocketrank.edge_runtime.transport import Transport

USER = "196"
MAX_EVENTS, MAX_BYTES = 600, 120_000


def test_thirty_days_offline(app, public_key, tmp_path):
    start = time.time() - 31 * 86400
    now = [start]
    online = Transport(client=httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://test"))
    c = EdgeClient(tmp_path / "d.sqlite", public_key, transport=online, clock=lambda: now[0],
                   max_outbox_events=MAX_EVENTS, max_outbox_bytes=MAX_BYTES)
    c.sync([USER])
    c.transport = Transport("http://127.0.0.1:9")  # the network is gone

    rng = random.Random(30)
    tracked: dict[str, str] = {}  # event id -> type
    for day in range(30):
        for _ in range(4):  # sessions
            rec = c.recommend(USER, 10)
            assert len(rec.items) == 10 and rec.source == "edge"
            assert rec.stale == (now[0] - start > 7 * 86400)  # still shown after a week, but marked
            for it in rec.items:
                tracked[c.track(USER, "impression", it.item_id)] = "impression"
            for it in rng.sample(rec.items, 3):
                tracked[c.track(USER, "view", it.item_id)] = "view"
            tracked[c.track(USER, "click", rec.items[0].item_id)] = "click"
            if rng.random() < 0.3:
                tracked[c.track(USER, "search", query=rng.choice(["star", "love", "war"]))] = "search"
            if rng.random() < 0.2:
                tracked[c.track(USER, "add_to_cart", rec.items[1].item_id)] = "add_to_cart"
            now[0] += 6 * 3600
        tracked[c.track(USER, "purchase", rng.randint(1, 1682))] = "purchase"
        events, nbytes = c.outbox.totals()
        assert events <= MAX_EVENTS and nbytes <= MAX_BYTES, (day, events, nbytes)
        assert c.flush().error  # offline: nothing leaves, nothing is lost

    queued = {e["event_id"]: e["type"] for e in c.outbox.batch(100_000, 1 << 30)}
    purchases = [i for i, t in tracked.items() if t == "purchase"]
    assert len(purchases) == 30 and set(purchases) <= set(queued)
    dropped = c.status()["dropped"]
    assert sum(dropped.values()) == len(tracked) - len(queued)
    # The drop order: a type is dropped only once every less valuable type is gone.
    gone = [t for t in DROP_ORDER if dropped.get(t)]
    assert gone == list(DROP_ORDER[: len(gone)]) and "click" not in gone
    assert not any(t in queued.values() for t in gone[:-1])

    c.transport = online  # the network is back
    c.reset_backoff()
    assert c.flush().remaining == 0
    store = app.extensions["pocketrank"].store
    assert store.count_events(list(queued)) == len(queued)
    c.close()
