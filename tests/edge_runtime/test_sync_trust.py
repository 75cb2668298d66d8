"""What the device trusts (issue 17): a real server process, a real EdgeClient, and a real man in the middle.

The server runs as its own process (`pocketrank serve`, demo_app/localserver.py) on a copy of the trained
home; every request of the device crosses demo_app/netproxy.py, which in "rewrite" mode reads each whole
HTTP response and changes it on the socket: it drops or replays an item entry, forges a live state, sends
an answer that never ends or that cannot be true, or hands recommend() a hostile body. Each case checks
what the device did with it: refused (a PocketrankError, its state as before) or survived (repaired by
the next honest answer), never applied, never a TypeError. The server's version moves (publish) in some
tests, so each test reads the version it starts from.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import resource
import threading
from types import SimpleNamespace

import numpy as np
import pytest

from lab.homes import copy_home
from pocketrank.demo_app.localserver import LocalServer
from pocketrank.demo_app.netproxy import NetProxy
from pocketrank.edge_runtime import EdgeClient, IntegrityError, PocketrankError, SignatureError, TransportError
from pocketrank.server.bundle.publish import publish_job
from pocketrank.server.home import Home
from pocketrank.shared import wire
from pocketrank.shared.features import UserState

USER = "196"


@pytest.fixture(scope="module")
def served(trained_home, tmp_path_factory):
    root = tmp_path_factory.mktemp("trust") / "home"
    copy_home(trained_home, root)
    before = os.environ.get("POCKETRANK_SYNC_RATE")
    os.environ["POCKETRANK_SYNC_RATE"] = "0"  # many syncs from one address: the rate limit is not under test
    try:
        server = LocalServer(root).start()
    finally:
        if before is None:
            os.environ.pop("POCKETRANK_SYNC_RATE")
        else:
            os.environ["POCKETRANK_SYNC_RATE"] = before
    proxy = NetProxy(("127.0.0.1", server.port), delay=0.0, loss=0.0).start()
    yield SimpleNamespace(home=root, server=server, proxy=proxy,
                          key=(root / "keys" / "signing.pub").read_text().strip())
    proxy.close()
    server.stop()


@pytest.fixture
def proxy(served):
    served.proxy.set("pass")
    yield served.proxy
    served.proxy.set("pass")


@pytest.fixture
def new_client(served, tmp_path):
    made = []

    def make(name: str = "phone") -> EdgeClient:
        # A generous budget: whether recommend() used the server is then decided by the answer, not the load.
        c = EdgeClient(tmp_path / f"{name}.sqlite", served.key, base_url=served.proxy.url, device_id=name,
                       latency_budget=10.0, sync_timeout=30.0, upload_timeout=30.0)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def on_sync(edit):
    """A rewrite for the proxy: each 200 sync answer parsed, edited in place (`edit(body, path)`), re-encoded."""

    def rewrite(path, status, body):
        if not path.startswith("/v1/sync") or status != 200:
            return None
        doc = json.loads(body)
        edit(doc, path)
        return json.dumps(doc).encode()

    return rewrite


def list_of(client, uid=USER) -> list[int]:
    blob = client.cache.query_one("SELECT blob FROM candidates WHERE user_id = ?", (uid,))[0]
    return wire.unpack_candidates(blob)[0].tolist()


def held_entry(client, index: int) -> tuple[bytes, float] | None:
    row = client.cache.query_one("SELECT sha256, price FROM items WHERE item_id = ?", (index,))
    return None if row is None else (bytes(row[0]), row[1])


def publish_with_new_prices(home, indexes: list[int]) -> tuple[int, set[int]]:
    """Publish a version in which each of `indexes` costs 7 more; (the version, USER's list in it)."""
    h = Home(home)
    store = h.store()
    items = store.get_items(indexes)
    store.put_items([dataclasses.replace(it, price=(it.price or 0.0) + 7.0) for it in items.values()])
    version = publish_job(h, progress=False)["version"]
    listed = set(wire.unpack_candidates(store.records_at(version, [USER])[USER].blob)[0].tolist())
    store.close()
    return version, listed


# --- item entries: dropped, replayed, frozen ---


@pytest.mark.parametrize("attack", ["drop", "replay"])
def test_an_item_entry_dropped_or_replayed_on_the_way_is_refused_then_repaired(served, proxy, new_client, attack):
    captured: dict[str, dict] = {}
    proxy.set("rewrite", rewrite=on_sync(lambda doc, path: captured.update(doc["items"])))
    held = new_client("held")
    before = held.sync([USER]).version
    # Several items change: the user's list may move at the new version (other tests track events for the
    # user), so the one attacked is in both lists.
    changed = [i for i in list_of(held) if i not in held.cache.popular()][:30]
    version, listed = publish_with_new_prices(served.home, changed)
    index = next(i for i in changed if i in listed)
    old_entry, old_price = captured[str(index)], held_entry(held, index)[1]

    def attack_entry(doc, path):
        if attack == "drop":
            doc["items"].pop(str(index), None)
        else:  # the entry of the previous revision: genuinely signed for this model, no longer current
            doc["items"][str(index)] = old_entry

    proxy.set("rewrite", rewrite=on_sync(attack_entry))
    with pytest.raises(IntegrityError, match="not the ones this version's answer sealed"):
        held.sync([USER])
    assert held.cache.version == before and held_entry(held, index)[1] == old_price  # nothing applied
    fresh = new_client("fresh")  # an old entry is not accepted by a new device either
    with pytest.raises(IntegrityError, match="not the ones this version's answer sealed"):
        fresh.sync([USER])
    assert fresh.cache.version == 0
    # The next honest sync is not a 304 (the device is still on its version) and brings the new entry.
    proxy.set("pass")
    for client in (held, fresh):
        assert client.sync([USER]).version == version
        assert held_entry(client, index)[1] == pytest.approx(old_price + 7.0)


# --- live states ---


@pytest.mark.parametrize("state", ["forged", "nan"])
def test_a_forged_or_not_finite_live_state_is_refused(served, proxy, new_client, state):
    client = new_client()
    if state == "forged":  # the state of a user who likes the last item of the list
        fake = UserState(np.full(32, 3.0, np.float32), 1.0, 1)
    else:
        fake = UserState(np.full(32, np.nan, np.float32), 1.0, 1)

    def forge(doc, path):
        dim = len(wire.unpack_state(base64.b64decode(doc["states"][USER])).s)
        doc["states"][USER] = base64.b64encode(wire.pack_state(UserState(fake.s[:dim].copy(), fake.w, 1))).decode()

    proxy.set("rewrite", rewrite=on_sync(forge))
    with pytest.raises(SignatureError, match="seal does not verify"):
        client.sync([USER])
    assert client.cache.version == 0 and client.cache.user_state(USER) is None


# --- caps on every JSON answer ---


def endless(chunk: bytes):
    def rewrite(path, status, body):
        if path.startswith(("/v1/sync", "/v1/events")):
            return 200, iter(lambda: chunk, None)  # never ends
        return None

    return rewrite


def test_an_endless_sync_answer_is_cut_at_the_cap(proxy, new_client):
    client = new_client()
    proxy.set("rewrite", rewrite=endless(b"[1," * 20000))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    with pytest.raises(TransportError, match="bytes allowed"):
        client.sync([USER])
    grew_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak) / 1024
    assert grew_mib < 200  # the cap is 32 MiB; the unbounded read took 1 GB
    assert client.cache.version == 0


def test_an_endless_upload_answer_is_cut_and_the_events_kept(proxy, new_client):
    client = new_client()
    client.sync([USER])
    client.track(USER, "click", client.recommend(USER, 1, allow_server=False).item_ids[0])
    proxy.set("rewrite", rewrite=endless(b" " * 60000))
    flushed = client.flush()
    assert "bytes allowed" in (flushed.error or "") and flushed.remaining == 1


@pytest.mark.parametrize("body", [b"[" * 100_000, b'{"a":' * 40 + b"1" + b"}" * 40, b'{"version": NaN}',
                                  b'{"version": 1e400}'])
def test_a_deep_or_not_finite_sync_answer_is_refused(proxy, new_client, body):
    client = new_client()
    proxy.set("rewrite", rewrite=lambda path, status, _: body if path.startswith("/v1/sync") else None)
    with pytest.raises(TransportError, match="deeper than|finite|JSON may carry"):
        client.sync([USER])
    assert client.cache.version == 0


# --- recommend() on a hostile answer: the device answers ---

HOSTILE = {
    "item id 1e400": b'{"items":[{"item_id":1e400,"score":1.0}]}',
    "item id 10**30": b'{"items":[{"item_id":' + str(10**30).encode() + b',"score":1.0}]}',
    "deep nesting": b'{"items":' + b"[" * 50_000 + b"]" * 50_000 + b"}",
    "NaN score": b'{"items":[{"item_id":"1","score":NaN}]}',
    "score a string": b'{"items":[{"item_id":"1","score":"nan"}]}',
    "no item id": b'{"items":[{"score":1.0}]}',
    "a list": b"[1,2,3]",
    "items an object": b'{"items":{"item_id":"1"}}',
    "not JSON": b"<html>gateway</html>",
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_recommend_answers_from_the_device_whatever_the_server_sends(proxy, new_client, case):
    client = new_client()
    client.sync([USER])
    expected = client.recommend(USER, 10, allow_server=False).item_ids
    proxy.set("rewrite", rewrite=lambda path, status, body: HOSTILE[case] if path.startswith("/v1/recom") else None)
    rec = client.recommend(USER, 10)
    assert rec.source == "edge" and rec.item_ids == expected
    assert "malformed" in rec.reason or "refused" in rec.reason or "non-JSON" in rec.reason


# --- answers that cannot be true, and malformed fields ---


def _same_for_all(doc, path):
    for e in doc["records"].values():
        e["kind"] = "same"
        e.pop("data", None)


IMPOSSIBLE = {
    "304 to cursor 0": (lambda path, status, body: (304, b"") if path.startswith("/v1/sync") else None,
                        IntegrityError, "cannot be true"),
    "same answering cursor 0": (on_sync(_same_for_all), IntegrityError, "cannot be true"),
    "record dropped": (on_sync(lambda doc, path: doc["records"].clear()), IntegrityError, "neither a record"),
    "version not the manifest's": (on_sync(lambda doc, path: doc.update(version=doc["version"] + 1)),
                                   IntegrityError, "cannot be true"),
    "signature a number": (on_sync(lambda doc, path: doc.update(signature=5)), IntegrityError, "signature"),
    "states a list": (on_sync(lambda doc, path: doc.update(states=[])), IntegrityError, "states"),
    "unknown_users a number": (on_sync(lambda doc, path: doc.update(unknown_users=7)), IntegrityError,
                               "unknown_users"),
    "records a string": (on_sync(lambda doc, path: doc.update(records="x")), IntegrityError, "records"),
    "seal missing": (on_sync(lambda doc, path: doc.pop("seal")), IntegrityError, "seal"),
    "items a list": (on_sync(lambda doc, path: doc.update(items=[])), IntegrityError, "items"),
    "user marked unknown": (on_sync(lambda doc, path: (doc["records"].clear(), doc.update(unknown_users=[USER]))),
                            SignatureError, "seal does not verify"),
}


@pytest.mark.parametrize("case", sorted(IMPOSSIBLE))
def test_an_answer_that_cannot_be_true_is_refused_as_a_pocketrank_error(proxy, new_client, case):
    rewrite, error, match = IMPOSSIBLE[case]
    client = new_client()
    proxy.set("rewrite", rewrite=rewrite)
    with pytest.raises(error, match=match) as caught:
        client.sync([USER])
    assert isinstance(caught.value, PocketrankError)
    assert client.cache.version == 0 and client.cache.candidates(USER) is None


# --- concurrency and self-repair ---


def test_concurrent_syncs_in_one_process_never_fail_across_a_publish(served, proxy, new_client, tmp_path):
    client = new_client("shared")
    client.sync([USER])
    # A second client on the same database file: another "process" for the race (its own lock).
    other = EdgeClient(tmp_path / "shared.sqlite", served.key, base_url=proxy.url, device_id="shared-2",
                       sync_timeout=30.0)
    errors: list[BaseException] = []
    go = threading.Event()

    def loop(c):
        go.wait()
        for _ in range(4):
            try:
                c.sync([USER])
            except Exception as exc:  # noqa: BLE001 - every failure is the finding
                errors.append(exc)

    threads = [threading.Thread(target=loop, args=(c,)) for c in (client,) * 4 + (other,) * 2]
    for t in threads:
        t.start()
    go.set()
    version = publish_job(Home(served.home), progress=False)["version"]
    for t in threads:
        t.join()
    assert errors == []
    assert client.sync([USER]).version == version and other.cache.version == version
    other.close()


def test_a_damaged_model_is_fetched_again_at_the_next_sync(proxy, new_client, tmp_path):
    client = new_client("damaged")
    client.sync([USER])
    ranker = client.cache.snapshot().ranker_sha
    path = client.cache.files.path(ranker)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    client.close()
    reopened = new_client("damaged")
    assert reopened.recommend(USER, 10, allow_server=False).source == "cache"  # the model does not load
    result = reopened.sync([USER])
    assert result.artifacts_fetched == ["ranker"] and path.read_bytes() != bytes(data)
    assert reopened.recommend(USER, 10, allow_server=False).source == "edge"
