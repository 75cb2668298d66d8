"""`bench attack sync`: what the device trusts, tried against a real server process through a real proxy.

A trained home (bench/_trained_home.py) is served by `pocketrank serve` in its own process; real
EdgeClients (each on its own SQLite file) talk to it through demo_app/netproxy.py in "rewrite" mode, a
man in the middle that reads each whole response and may change it on the socket. Every case of issue
17's class "What the device trusts (sync)" is tried and reported as

- refused: the device raised a PocketrankError (or recommend() answered from the device) and kept its state;
- survived: the device did the right thing anyway (an honest retry repaired it, a race passed unharmed);
- wrong: it applied what it was sent, raised a non-PocketrankError, or raised a security error for a race;
- 5xx: the server answered 500 or more (the proxy sees every status).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import resource
import tempfile
import threading
import traceback
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

from bench._trained_home import trained_home
from pocketrank.demo_app.localserver import LocalServer
from pocketrank.demo_app.netproxy import NetProxy
from pocketrank.edge_runtime import EdgeClient
from pocketrank.shared import wire
from pocketrank.shared.errors import PocketrankError
from pocketrank.shared.features import UserState

USER = "196"
OTHER = "186"

ITEMS = "sync: item entries dropped, replayed, frozen"
STATES = "sync: live states and unknown users"
CAPS = "sync: size and depth caps on JSON answers"
RECOMMEND = "sync: recommend() on a hostile answer"
IMPOSSIBLE = "sync: answers that cannot be true"
MALFORMED = "sync: malformed answer fields"
CONCURRENT = "sync: concurrent sync() in one process"
REPAIR = "sync: a damaged model repairs itself"
REQUESTS = "sync: malformed requests to the sync API"


class Harness:
    def __init__(self, root: Path, tmp: Path, server: LocalServer, proxy: NetProxy, report):
        self.root, self.tmp, self.server, self.proxy, self._report = root, tmp, server, proxy, report
        self.key = (root / "keys" / "signing.pub").read_text().strip()
        self.statuses: list[int] = []
        self._n = 0
        self._lock = threading.Lock()

    def client(self, name: str | None = None, path: Path | None = None) -> EdgeClient:
        self._n += 1
        return EdgeClient(path or self.tmp / f"{name or 'd'}-{self._n}.sqlite", self.key, base_url=self.proxy.url,
                          device_id=f"bench-{self._n}", latency_budget=10.0, sync_timeout=30.0, upload_timeout=30.0)

    def mitm(self, rewrite: Callable | None = None) -> None:
        """Every response through `rewrite` (None: unchanged), its status recorded first."""

        def seen(path, status, body):
            with self._lock:
                self.statuses.append(status)
            return rewrite(path, status, body) if rewrite else None

        self.proxy.set("rewrite", rewrite=seen)

    def report(self, cls: str, case: str, outcome: str, detail: str = "") -> None:
        with self._lock:
            bad, self.statuses = [s for s in self.statuses if s >= 500], []
        self._report(cls, case, "5xx" if bad else outcome, detail or (f"statuses {bad}" if bad else ""))

    def publish_new_prices(self, indexes: list[int], uid: str = USER) -> tuple[int, set[int]]:
        """Publish a version in which each of `indexes` costs 7 more; (the version, `uid`'s list in it)."""
        from pocketrank.server.bundle.publish import publish_job
        from pocketrank.server.home import Home

        home = Home(self.root)
        store = home.store()
        items = store.get_items(indexes)
        store.put_items([dataclasses.replace(it, price=(it.price or 0.0) + 7.0) for it in items.values()])
        version = publish_job(home, progress=False)["version"]
        listed = set(wire.unpack_candidates(store.records_at(version, [uid])[uid].blob)[0].tolist())
        store.close()
        return version, listed


def on_sync(edit: Callable[[dict], None]) -> Callable:
    def rewrite(path, status, body):
        if not path.startswith("/v1/sync") or status != 200:
            return None
        doc = json.loads(body)
        edit(doc)
        return json.dumps(doc).encode()

    return rewrite


def attempt(fn: Callable[[], object]) -> tuple[str, object]:
    """("ok", result), ("refused", the PocketrankError) or ("wrong", any other exception)."""
    try:
        return "ok", fn()
    except PocketrankError as exc:
        return "refused", exc
    except Exception as exc:  # noqa: BLE001 - a non-PocketrankError is the finding
        return "wrong", exc


def held_price(client: EdgeClient, index: int) -> float | None:
    row = client.cache.query_one("SELECT price FROM items WHERE item_id = ?", (index,))
    return None if row is None else row[0]


def list_of(client: EdgeClient, uid: str = USER) -> list[int]:
    row = client.cache.query_one("SELECT blob FROM candidates WHERE user_id = ?", (uid,))
    return [] if row is None else wire.unpack_candidates(row[0])[0].tolist()


# --- the classes ---


def item_entries(h: Harness) -> None:
    captured: dict[str, dict] = {}
    h.mitm(on_sync(lambda doc: captured.update(doc["items"])))
    held = h.client("held")
    start = held.sync([USER]).version
    # Several of the list's items change price: the user's list may move at the new version (events other
    # classes sent), so the item attacked is one that is in both lists.
    changed = [i for i in list_of(held) if i not in held.cache.popular()][:30]
    h.mitm()
    version, listed = h.publish_new_prices(changed)
    index = next(i for i in changed if i in listed)
    old_entry, old_price = captured[str(index)], held_price(held, index)
    new_price = old_price + 7.0  # type: ignore[operator]  # held: the device holds its list's entries

    def drop(doc):
        doc["items"].pop(str(index), None)

    def replay(doc):
        doc["items"][str(index)] = old_entry

    devices = {"held": held}
    for case, edit, who in (("a new entry dropped, device holding the old one", drop, "held"),
                            ("the old entry re-served (frozen), device holding it", replay, "held"),
                            ("a new entry dropped, new device", drop, "fresh-drop"),
                            ("an old entry replayed to a new device", replay, "fresh-replay")):
        client = devices.setdefault(who, h.client(who))
        before = (client.cache.version, held_price(client, index))
        h.mitm(on_sync(edit))
        got, value = attempt(lambda c=client: c.sync([USER]))
        kept = (client.cache.version, held_price(client, index)) == before
        h.report(ITEMS, case, "refused" if got == "refused" and kept else "wrong",
                 f"{got}: {value}; version {before[0]} -> {client.cache.version}"[:300])
    h.mitm()
    for who, client in devices.items():
        got, value = attempt(lambda c=client: c.sync([USER]))
        price = held_price(client, index)
        ok = got == "ok" and client.cache.version == version and price is not None and abs(price - new_price) < 1e-3
        h.report(ITEMS, f"the next honest sync repairs ({who}, from version {start})", "survived" if ok else "wrong",
                 "" if ok else f"{got}: {value}; price {held_price(client, index)}"[:300])
        client.close()


def states(h: Harness) -> None:
    def put_state(doc, uid, make):
        dim = len(wire.unpack_state(base64.b64decode(doc["states"][uid])).s)
        doc["states"][uid] = base64.b64encode(wire.pack_state(make(dim))).decode()

    cases = {
        "a forged state (every dimension 3.0)": lambda doc: put_state(doc, USER, lambda d: UserState(
            np.full(d, 3.0, np.float32), 1.0, 1)),
        "an all-NaN state": lambda doc: put_state(doc, USER, lambda d: UserState(np.full(d, np.nan, np.float32),
                                                                                 1.0, 1)),
        "an infinite W": lambda doc: put_state(doc, USER, lambda d: UserState(np.ones(d, np.float32),
                                                                              float("inf"), 1)),
        "another user's state swapped in": lambda doc: doc["states"].update(
            {USER: doc["states"][OTHER], OTHER: doc["states"][USER]}),
        "a known user marked unknown": lambda doc: (doc["records"].pop(OTHER),
                                                    doc.update(unknown_users=sorted([*doc["unknown_users"], OTHER]))),
        "the state block of another cursor's answer": None,  # below: a genuine answer replayed
    }
    genuine: dict[str, dict] = {}
    h.mitm(on_sync(lambda doc: genuine.setdefault("doc", json.loads(json.dumps(doc)))))
    seed = h.client("seed")
    seed.sync([OTHER, USER])
    seed.close()
    for case, edit in cases.items():
        client = h.client("states")
        if edit is None:  # the first device's answer (cursor 0) served to a device asking with its own cursor
            client.sync([OTHER, USER])
            h.mitm(lambda path, status, body: (json.dumps({**genuine["doc"], "cursor": client.cache.version})
                                               .encode() if path.startswith("/v1/sync") else None))
            before = client.cache.user_state(USER)
            got, value = _force_sync(client)
            after = client.cache.user_state(USER)
            same = before is not None and after is not None and np.array_equal(before.s, after.s)
            h.report(STATES, case, "refused" if got == "refused" and same else "wrong", f"{got}: {value}")
        else:
            h.mitm(on_sync(edit))
            got, value = attempt(lambda c=client: c.sync([OTHER, USER]))
            untouched = client.cache.version == 0 and client.cache.user_state(USER) is None
            h.report(STATES, case, "refused" if got == "refused" and untouched else "wrong", f"{got}: {value}")
        client.close()
        h.mitm()


def _force_sync(client: EdgeClient) -> tuple[str, object]:
    """A sync whose first request cannot be a 304 (a user named as held at no version), so the replayed 200 is read."""
    with client.cache.tx() as conn:
        conn.execute("DELETE FROM candidates WHERE user_id = ?", (OTHER,))
    return attempt(lambda: client.sync([OTHER, USER]))


def endless(chunk: bytes, prefix: str) -> Callable:
    def rewrite(path, status, body):
        return (200, iter(lambda: chunk, None)) if path.startswith(prefix) else None

    return rewrite


def caps(h: Harness) -> None:
    def maxrss_mib() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    for case, rewrite in (("an endless sync answer", endless(b"[1," * 20000, "/v1/sync")),
                          ("a sync answer nested 100,000 deep",
                           lambda p, s, b: b"[" * 100_000 if p.startswith("/v1/sync") else None),
                          ("a sync answer with NaN", lambda p, s, b: b'{"version":NaN}' if p.startswith("/v1/sync")
                           else None),
                          ("a sync answer with 1e400", lambda p, s, b: b'{"version":1e400}' if p.startswith("/v1/sync")
                           else None),
                          ("a sync answer of 40 MiB of valid JSON",
                           lambda p, s, b: b'{"pad":"' + b"x" * (40 << 20) + b'"}' if p.startswith("/v1/sync")
                           else None)):
        client = h.client("caps")
        h.mitm(rewrite)
        peak = maxrss_mib()
        got, value = attempt(lambda c=client: c.sync([USER]))
        grew = maxrss_mib() - peak
        ok = got == "refused" and client.cache.version == 0 and grew < 200
        h.report(CAPS, case, "refused" if ok else "wrong", f"{got}: {str(value)[:120]}; rss +{grew:.0f} MiB")
        client.close()
    for case, rewrite in (("an endless upload answer", endless(b" " * 60000, "/v1/events")),
                          ("an upload answer nested 100,000 deep",
                           lambda p, s, b: b"[" * 100_000 if p.startswith("/v1/events") else None)):
        h.mitm()
        client = h.client("uploads")
        client.sync([USER])
        client.track(USER, "click", client.recommend(USER, 1, allow_server=False).item_ids[0])
        h.mitm(rewrite)
        got, value = attempt(client.flush)
        kept = got == "ok" and value.error and value.remaining == 1  # type: ignore[union-attr]
        h.report(CAPS, case, "refused" if kept else "wrong", f"{got}: {value}")
        client.close()
    h.mitm()


HOSTILE = {
    "item id 1e400": b'{"items":[{"item_id":1e400,"score":1.0}]}',
    "item id 10**30": b'{"items":[{"item_id":' + str(10**30).encode() + b',"score":1.0}]}',
    "nested 50,000 deep": b'{"items":' + b"[" * 50_000 + b"]" * 50_000 + b"}",
    "a NaN score": b'{"items":[{"item_id":"1","score":NaN}]}',
    "a score that is a string": b'{"items":[{"item_id":"1","score":"nan"}]}',
    "an item without an id": b'{"items":[{"score":1.0}]}',
    "a list, not an object": b"[1,2,3]",
    "items an object": b'{"items":{"item_id":"1"}}',
    "an HTML page": b"<html>gateway</html>",
    "an endless answer": None,
}


def recommend(h: Harness) -> None:
    h.mitm()
    client = h.client("recommend")
    client.sync([USER])
    expected = client.recommend(USER, 10, allow_server=False).item_ids
    for case, body in HOSTILE.items():
        client.reset_backoff()
        h.mitm(endless(b" " * 60000, "/v1/recom") if body is None else
               (lambda b: lambda p, s, _: b if p.startswith("/v1/recom") else None)(body))
        got, rec = attempt(lambda: client.recommend(USER, 10))
        ok = got == "ok" and rec.source == "edge" and rec.item_ids == expected  # type: ignore[union-attr]
        h.report(RECOMMEND, case, "refused" if ok else "wrong", f"{got}: {rec}"[:200])
    client.close()
    h.mitm()


def _records(edit: Callable[[dict], None]) -> Callable[[dict], None]:
    def each(doc):
        for e in doc["records"].values():
            edit(e)

    return each


def impossible(h: Harness) -> None:
    cases: dict[str, Callable] = {
        "304 to cursor 0": lambda p, s, b: (304, b"") if p.startswith("/v1/sync") else None,
        "'same' answering cursor 0": on_sync(_records(lambda e: (e.update(kind="same"), e.pop("data", None)))),
        "'delta' answering cursor 0": on_sync(_records(lambda e: e.update(kind="delta", base_version=1,
                                                                          base_sha256=e["sha256"]))),
        "a listed user's record dropped": on_sync(lambda doc: doc["records"].pop(USER)),
        "version not the manifest's": on_sync(lambda doc: doc.update(version=doc["version"] + 1)),
        "cursor not the request's": on_sync(lambda doc: doc.update(cursor=7)),
        "an answer for a user not asked for": on_sync(lambda doc: doc["states"].update(intruder=doc["states"][USER])),
        "a snapshot with a 'same' record": on_sync(lambda doc: (doc.update(snapshot=True),
                                                                _records(lambda e: e.update(kind="same"))(doc))),
    }
    for case, rewrite in cases.items():
        client = h.client("impossible")
        h.mitm(rewrite)
        got, value = attempt(lambda c=client: c.sync([USER]))
        ok = got == "refused" and client.cache.version == 0
        h.report(IMPOSSIBLE, case, "refused" if ok else "wrong", f"{got}: {value}")
        client.close()
    # A 304 to a device naming a user it holds no record for.
    h.mitm()
    client = h.client("impossible-without")
    client.sync([USER])
    h.mitm(lambda p, s, b: (304, b"") if p.startswith("/v1/sync") else None)
    got, value = attempt(lambda: client.sync([USER, OTHER]))
    h.report(IMPOSSIBLE, "304 to a request naming a user held at no version",
             "refused" if got == "refused" and not client.cache.candidates(OTHER) else "wrong", f"{got}: {value}")
    client.close()
    h.mitm()


def malformed(h: Harness) -> None:
    fields: dict[str, object] = {"signature": 5, "manifest": 5, "seal": None, "states": [], "unknown_users": 7,
                                 "records": "x", "items": [], "list_digests": [], "popular_digest": 3,
                                 "artifacts": [], "version": "1", "cursor": None, "snapshot": "no"}
    for field, value in fields.items():
        client = h.client("malformed")
        h.mitm(on_sync(lambda doc, f=field, v=value: doc.update({f: v})))
        got, exc = attempt(lambda c=client: c.sync([USER]))
        h.report(MALFORMED, f"{field} = {value!r}", "refused" if got == "refused" else "wrong", f"{got}: {exc!r}")
        client.close()
    for case, edit in (("a record entry that is a list", lambda doc: doc["records"].update({USER: []})),
                       ("a state that is not base64", lambda doc: doc["states"].update({USER: "%%%"})),
                       ("an item entry that is a number", lambda doc: doc["items"].update({"1": 5})),
                       ("the whole answer a list", None)):
        client = h.client("malformed")
        h.mitm((lambda p, s, b: b"[]" if p.startswith("/v1/sync") else None) if edit is None else on_sync(edit))
        got, exc = attempt(lambda c=client: c.sync([USER]))
        h.report(MALFORMED, case, "refused" if got == "refused" else "wrong", f"{got}: {exc!r}")
        client.close()
    h.mitm()


def concurrent(h: Harness) -> None:
    from pocketrank.server.bundle.publish import publish_job
    from pocketrank.server.home import Home

    h.mitm()
    path = h.tmp / "concurrent.sqlite"
    first = h.client(path=path)
    first.sync([USER])
    second = h.client(path=path)  # another client on the same file: the cross-process race, its own lock
    outcomes: list[tuple[str, object]] = []
    go = threading.Event()

    def loop(c):
        go.wait()
        for _ in range(6):
            outcomes.append(attempt(lambda: c.sync([USER])))

    threads = [threading.Thread(target=loop, args=(c,)) for c in [first] * 6 + [second] * 4]
    for t in threads:
        t.start()
    go.set()
    version = publish_job(Home(h.root), progress=False)["version"]
    for t in threads:
        t.join()
    for i, (got, value) in enumerate(outcomes):
        h.report(CONCURRENT, f"call {i + 1} of {len(outcomes)}", "survived" if got == "ok" else "wrong",
                 f"{got}: {value!r}"[:200])
    got, value = attempt(lambda: first.sync([USER]))
    h.report(CONCURRENT, "both clients end on the new version",
             "survived" if got == "ok" and first.cache.version == second.cache.version == version else "wrong",
             f"{got}: {value}")
    first.close()
    second.close()


def repair(h: Harness) -> None:
    h.mitm()
    for case, damage in (("a flipped byte in the ranker file", lambda p: p.write_bytes(_flip(p.read_bytes()))),
                         ("the ranker file deleted", lambda p: p.unlink()),
                         ("the ranker file truncated", lambda p: p.write_bytes(p.read_bytes()[:100]))):
        path = h.tmp / f"repair-{abs(hash(case))}.sqlite"
        client = h.client(path=path)
        client.sync([USER])
        damage(client.cache.files.path(client.cache.snapshot().ranker_sha))
        client.close()
        client = h.client(path=path)
        fallback = client.recommend(USER, 10, allow_server=False).source
        got, value = attempt(lambda c=client: c.sync([USER]))
        after = client.recommend(USER, 10, allow_server=False).source
        ok = got == "ok" and fallback == "cache" and after == "edge"
        h.report(REPAIR, case, "survived" if ok else "wrong", f"{got}: {value}; {fallback} -> {after}")
        client.close()


def requests(h: Harness) -> None:
    h.mitm()
    bad = {"cursor=-1": "cursor=-1&users=196", "cursor=2**40": f"cursor={2**40}&users=196",
           "cursor=abc": "cursor=abc&users=196", "no users": "cursor=0&users=", "51 users":
           "cursor=0&users=" + ",".join(str(i) for i in range(1, 52)), "a user id of 65 characters":
           "cursor=0&users=" + "u" * 65, "without not in users": "cursor=0&users=196&without=186",
           "items not integers": "cursor=0&users=196&items=x", "items past i32": "cursor=0&users=196&items=3000000000",
           "2,001 items": "cursor=0&users=196&items=" + ",".join(map(str, range(2001))),
           "model with a slash": "cursor=0&users=196&model=../x", "model empty": "cursor=0&users=196&model=",
           "an If-None-Match of 10 KB": None}
    with httpx.Client(base_url=h.proxy.url, timeout=30) as http:
        for case, query in bad.items():
            headers = {"If-None-Match": "x" * 10_000} if query is None else {}
            resp = http.get(f"/v1/sync?{query or 'cursor=1&users=196'}", headers=headers)
            outcome = "refused" if 400 <= resp.status_code < 500 else "survived" if resp.status_code < 400 else "5xx"
            h.report(REQUESTS, case, outcome, f"{resp.status_code}")
        for case, url in (("an artifact of no version", "/v1/artifacts/999999/ranker.int8.onnx"),
                          ("an artifact path with ..", "/v1/artifacts/1/..%2Fmanifest.json"),
                          ("a variant artifact with a bad model", "/v1/artifacts/1/canary/..%2F..%2Fkeys/signing.key")):
            resp = http.get(url)
            h.report(REQUESTS, case, "refused" if 400 <= resp.status_code < 500 else
                     "5xx" if resp.status_code >= 500 else "wrong", f"{resp.status_code}")


def _flip(data: bytes) -> bytes:
    b = bytearray(data)
    b[len(b) // 2] ^= 0xFF
    return bytes(b)


def run(report) -> None:
    with tempfile.TemporaryDirectory(prefix="attack-sync-") as tmp:
        root = trained_home(Path(tmp) / "home")
        before = os.environ.get("POCKETRANK_SYNC_RATE")
        os.environ["POCKETRANK_SYNC_RATE"] = "0"  # hundreds of syncs from one address: the rate limit is not tried
        try:
            server = LocalServer(root).start()
        finally:
            if before is None:
                os.environ.pop("POCKETRANK_SYNC_RATE")
            else:
                os.environ["POCKETRANK_SYNC_RATE"] = before
        proxy = NetProxy(("127.0.0.1", server.port), delay=0.0, loss=0.0).start()
        h = Harness(root, Path(tmp), server, proxy, report)
        try:
            for area in (requests, malformed, impossible, states, recommend, caps, repair, item_entries, concurrent):
                try:
                    area(h)
                except Exception:  # noqa: BLE001 - one class's harness failing is reported, the others still run
                    traceback.print_exc()
                    h.report(area.__name__, "harness", "wrong", "the harness itself failed")
        finally:
            proxy.close()
            server.stop()
