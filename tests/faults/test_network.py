"""Poor, flapping and offline networks, made by a real proxy on loopback in front of a real server."""

import random
import time

import pytest

from pocketrank.edge_runtime import EdgeClient, TransportError
from pocketrank.edge_runtime.policy import Connectivity
from pocketrank.server.bundle.publish import publish_job
from pocketrank.server.home import Home

pytestmark = pytest.mark.slow  # see `make test-fast`

USER = "196"


@pytest.fixture
def client(proxy, public_key, tmp_path):
    c = EdgeClient(tmp_path / "d.sqlite", public_key, base_url=proxy.url, device_id="phone", latency_budget=0.15,
                   sync_timeout=5.0, upload_timeout=5.0)
    c.sync([USER])
    yield c
    c.close()


def offline_answer(c):
    return c.recommend(USER, 10, allow_server=False).item_ids


@pytest.mark.parametrize("mode, params", [("delay", {"delay": 2.0}), ("blackhole", {}),
                                          ("trickle", {"delay": 0.05, "piece": 16})])
def test_a_slow_server_costs_one_latency_budget_then_none(client, proxy, mode, params):
    expected = offline_answer(client)
    proxy.set(mode, **params)
    rec = client.recommend(USER, 10)
    assert rec.source == "edge" and rec.item_ids == expected
    assert rec.latency_ms < 1000  # the budget is 150 ms; the slow path would take 2 s or more
    assert "deadline" in rec.reason or "Timeout" in rec.reason
    attempts = proxy.attempts
    again = client.recommend(USER, 10)
    assert again.reason.startswith("server in backoff") and again.latency_ms < 100
    assert proxy.attempts == attempts  # backing off means not even trying


def test_offline_every_call_still_answers_and_nothing_is_lost(client, proxy, live_server):
    proxy.set("reset")
    clicked = client.recommend(USER, 3).item_ids  # product ids; track() answers event ids
    ids = [client.track(USER, "click", item) for item in clicked]
    rec = client.recommend(USER, 10)
    assert rec.source == "edge" and len(rec.items) == 10 and not set(clicked) & set(rec.item_ids)
    with pytest.raises(TransportError):
        client.sync([USER])
    assert client.cache.version == 1
    flushed = client.flush()
    assert flushed.error and flushed.remaining == 3 and flushed.retry_in > 0
    proxy.set("pass")
    client.reset_backoff()
    assert client.flush().acknowledged == 3
    assert set(live_server.event_counts(ids).values()) == {1}


def test_a_lost_acknowledgement_never_counts_an_event_twice(client, proxy, live_server):
    ids = [client.track(USER, "click", item) for item in (1, 2, 3)]
    proxy.set("lose_ack")
    first = client.flush()
    assert first.error and first.remaining == 3
    assert live_server.event_counts(ids) == dict.fromkeys(ids, 1)  # the server did store them
    proxy.set("pass")
    client.reset_backoff()
    second = client.flush()
    assert second.acknowledged == 3 and second.remaining == 0
    assert live_server.event_counts(ids) == dict.fromkeys(ids, 1)


def test_retry_after_is_honoured_by_uploads(proxy, public_key, tmp_path, live_server):
    now = [0.0]

    def sleep(s):
        now[0] += s

    uploads = Connectivity(clock=lambda: now[0])
    c = EdgeClient(tmp_path / "d.sqlite", public_key, base_url=proxy.url, uploads=uploads, sleep=sleep)
    event_id = c.track(USER, "purchase", 50)
    proxy.set("busy", retry_after="30")
    first = c.flush()
    assert "503" in first.error and first.retry_in == pytest.approx(30)
    attempts = proxy.attempts
    assert c.flush().error.startswith("uploads back off") and proxy.attempts == attempts
    proxy.set("pass")
    c.reset_backoff()  # the network came back; the server's 30 s still hold
    assert c.flush().remaining == 1 and proxy.attempts == attempts
    done = c.flush(wait=60)  # waits the 30 s (on the injected clock), then uploads
    assert done.acknowledged == 1 and now[0] == pytest.approx(30)
    assert live_server.event_counts([event_id]) == {event_id: 1}
    c.close()


def test_a_download_cut_part_way_resumes_where_it_stopped(client, proxy, home):
    h = Home(home)
    model_dir = h.model_dir(h.current_model())
    (model_dir / "ranker.int8.onnx").write_bytes((model_dir / "ranker.fp32.onnx").read_bytes())
    publish_job(h, progress=False)
    proxy.set("cut", cut_path="/v1/artifacts/2/ranker", cut_after=30_000)
    with pytest.raises(TransportError, match="resume"):
        client.sync([USER])
    assert client.cache.version == 1 and client.recommend(USER, 5, allow_server=False).source == "edge"
    partials = list(client.cache.files.dir.glob("*.part"))
    assert len(partials) == 1 and 0 < partials[0].stat().st_size < 30_000
    kept = partials[0].stat().st_size
    proxy.set("pass")
    assert client.sync([USER]).version == 2
    ranged = [r for r in proxy.requests if "/v1/artifacts/2/ranker" in r and f"bytes={kept}-" in r.lower()]
    assert ranged and not list(client.cache.files.dir.glob("*.part"))
    assert client.recommend(USER, 5, allow_server=False).source == "edge"


def _device_state(c):
    """What a device holds that a sync decides: version, model files, records and item table, offline answers."""
    files = sorted(p.name for p in c.cache.files.dir.iterdir() if not p.name.endswith(".part"))
    rec = c.recommend(USER, 20, allow_server=False)
    return c.cache.version, files, rec.source, rec.item_ids, [round(i.score, 6) for i in rec.items]


def test_downloads_cut_at_random_offsets_end_in_the_uninterrupted_state(client, proxy, home, live_server,
                                                                         public_key, tmp_path):
    h = Home(home)
    model_dir = h.model_dir(h.current_model())
    # A ranker big enough (the fp32 file, ~70 KB) for several cuts part-way through it.
    (model_dir / "ranker.int8.onnx").write_bytes((model_dir / "ranker.fp32.onnx").read_bytes())
    publish_job(h, progress=False)
    straight = EdgeClient(tmp_path / "straight.sqlite", public_key, base_url=live_server.url, device_id="other",
                          sync_timeout=5.0)
    straight.sync([USER])
    rng = random.Random(11)
    for cut in (rng.randrange(500, 20_000) for _ in range(3)):  # each response cut after `cut` bytes
        proxy.set("cut", cut_path="/v1/artifacts/2/ranker", cut_after=cut)
        with pytest.raises(TransportError, match="resume"):
            client.sync([USER])
        assert client.cache.version == 1  # nothing of version 2 applied half-way
    proxy.set("pass")
    assert client.sync([USER]).version == 2
    assert not list(client.cache.files.dir.glob("*.part"))
    assert _device_state(client) == _device_state(straight)
    straight.close()


def test_a_flapping_link_never_blanks_the_screen_or_loses_an_event(client, proxy, live_server):
    rng = random.Random(5)
    client.connectivity = Connectivity(base_backoff=0.05, max_backoff=0.4)
    client.uploads = Connectivity(base_backoff=0.05, max_backoff=0.4)
    proxy.flap(("pass", "reset", "delay", "pass", "blackhole"), period=0.07)
    proxy.delay = 0.5
    tracked, sources = [], set()
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        rec = client.recommend(USER, 10)
        assert len(rec.items) == 10, (rec.source, rec.reason)
        sources.add(rec.source)
        # Mostly views: every click removes an item for good, and ~300 would exhaust what is cached.
        click = rng.random() < 0.05 and len(tracked) < 1000
        tracked.append(client.track(USER, "click" if click else "view", rng.choice(rec.item_ids)))
        if rng.random() < 0.3:
            client.flush()
    proxy.steady("pass")
    client.reset_backoff()
    assert client.flush(wait=10).remaining == 0
    assert sources == {"server", "edge"}
    counts = live_server.event_counts(tracked)
    assert set(counts.values()) == {1}, {k: v for k, v in counts.items() if v != 1}
