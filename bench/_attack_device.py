"""`bench attack device`: issue 17's "the device itself" against a real server process and real device files.

Classes (one row each): processes racing to open one database; a flush that must end; an unreadable queued
event; a wrong device clock; damaged stored rows; read-only or full storage (a real tmpfs in a mount
namespace: skipped where unshare -rm is not allowed). Each case reports "survived" (the device did the
right thing: nothing lost, nothing wrong, said so), "refused" (the SDK raised a PocketrankError that says
what is wrong), or "wrong".
"""

from __future__ import annotations

import http.server
import json
import logging
import math
import random
import tempfile
import threading
import time
from pathlib import Path

from ._device_harness import USER, Events, device, flip, reseal, scratch_home, start_server

OPEN, FLUSH, UNREADABLE = "device: processes opening one db", "device: flush that must end", \
    "device: unreadable queued event"
CLOCK, DAMAGE, STORAGE = "device: wrong device clock", "device: damaged stored rows", "device: read-only/full storage"


def run(report) -> None:
    from pocketrank.edge_runtime import PocketrankError

    # Every damage the cases make is logged as a warning by the SDK: the report's table says it instead.
    logging.getLogger("edge_runtime").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="attack-device-") as tmp:
        root = Path(tmp)
        home = scratch_home(root)
        key = (home / "keys" / "signing.pub").read_text().strip()
        server = start_server(home)
        try:
            events = Events(home)
            for cases in (_open_race, _flush, _unreadable, _clock, _damage, _storage):
                try:
                    cases(report, root / cases.__name__.strip("_"), server, key, events)
                except PocketrankError as exc:  # a case harness must not stop the other classes
                    report(cases.__name__, "harness", "wrong", f"{type(exc).__name__}: {exc}")
        finally:
            server.stop()


def _ok(report, cls: str, case: str, good: bool, detail: str = "") -> None:
    report(cls, case, "survived" if good else "wrong", "" if good else detail)


# --- processes opening one database at once ---

def _open_race(report, root: Path, server, key, events) -> None:
    from ._openrace import broken_by_the_old_race, context, old_format, opened, race

    root.mkdir(parents=True)
    ctx = context()
    for i in range(5):
        path = root / f"new-{i}.sqlite"
        results = race(ctx, path)
        _ok(report, OPEN, f"4 processes open a new file ({i})", results == ["ok"] * 4 and opened(path)[0] == "ok",
            f"{results}, then {opened(path)[0]}")
    for i in range(3):
        path = root / f"old-{i}.sqlite"
        ids = old_format(path, 300)
        results = race(ctx, path)
        status, held = opened(path)
        _ok(report, OPEN, f"4 processes open a v1 file with 300 queued events ({i})",
            results == ["ok"] * 4 and status == "ok" and sorted(held) == sorted(ids),
            f"{results}, then {status}, {len(set(ids) - set(held))} events lost")
    path = root / "broken.sqlite"
    ids = broken_by_the_old_race(path, 300)
    status, held = opened(path)
    _ok(report, OPEN, "a file the old race left unopenable", status == "ok" and sorted(held) == sorted(ids), status)


# --- flush() must end, measured by rows removed ---

class _Liar(http.server.BaseHTTPRequestHandler):
    """A server that acknowledges what it was not sent (or everything twice), to see flush() end anyway."""

    mode = "others"

    def do_POST(self) -> None:  # noqa: N802  (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        ids = [e["event_id"] for e in body["events"]]
        if self.mode == "others":
            results = [{"event_id": "x" + e[1:], "status": "accepted"} for e in ids]
        else:
            results = [{"event_id": e, "status": "accepted"} for e in ids] * 2
        data = json.dumps({"results": results, "accepted": len(ids), "duplicate": 0, "rejected": 0}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


def _bounded_flush(c, seconds: float = 60.0):
    """flush() in a thread: (result, None) or (None, "did not return") so a loop is reported, not hung on."""
    out: list = []
    t = threading.Thread(target=lambda: out.append(c.flush()), daemon=True)
    t.start()
    t.join(seconds)
    return (out[0], None) if out else (None, f"flush() did not return within {seconds:.0f} s")


def _flush(report, root: Path, server, key, events) -> None:
    root.mkdir(parents=True)
    for where, sql in (("row id", "UPDATE outbox SET event_id = 'x' || substr(event_id, 2) WHERE event_id = ?"),
                       ("body id", "UPDATE outbox SET body = replace(body, ?1, 'x' || substr(?1, 2)) "
                                   "WHERE event_id = ?1")):
        c = device(root / f"{where.replace(' ', '-')}.sqlite", server, key)
        ids = [c.track(USER, "view", str(i)) for i in range(1, 8)]
        c.cache.conn.execute(sql, (ids[3],))
        result, hung = _bounded_flush(c)
        good = (hung is None and result.quarantined == 1 and result.remaining == 0 and result.batches <= 2
                and events.once(ids[:3] + ids[4:]) and events.none(ids[3:4]))
        _ok(report, FLUSH, f"one changed byte in a queued event's {where}", good, hung or str(result))
        c.close()
    for mode in ("others", "twice"):
        _Liar.mode = mode
        liar = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Liar)
        threading.Thread(target=liar.serve_forever, daemon=True).start()
        from pocketrank.edge_runtime import EdgeClient

        c = EdgeClient(root / f"liar-{mode}.sqlite", None, base_url=f"http://127.0.0.1:{liar.server_port}")
        for i in range(1, 6):
            c.track(USER, "view", str(i))
        result, hung = _bounded_flush(c)
        expect = 5 if mode == "others" else 0  # acks of ids never sent delete nothing; doubled acks once
        good = hung is None and result.remaining == expect and result.batches <= 2
        _ok(report, FLUSH, f"a server acknowledging {'ids it was not sent' if mode == 'others' else 'every id twice'}",
            good, hung or str(result))
        c.close()
        liar.shutdown()
        liar.server_close()


# --- one unreadable queued event ---

def _unreadable(report, root: Path, server, key, events) -> None:
    root.mkdir(parents=True)
    bodies = {"truncated JSON": "substr(body, 1, 25)", "a JSON list": "'[1, 2, 3]'", "an empty body": "''",
              "bytes that are not UTF-8": "x'ff00fe41'", "a JSON string": "'\"view\"'", "NULL": "NULL"}
    for name, expr in bodies.items():
        for sealed in (False, True):  # damaged (checksum fails) / as an older SDK might have left it (checksum holds)
            c = device(root / f"{len(list(root.iterdir()))}.sqlite", server, key)
            ids = [c.track(USER, "view", str(i)) for i in range(1, 6)]
            c.cache.conn.execute(f"UPDATE outbox SET body = {expr} WHERE event_id = ?", (ids[0],))
            if sealed:
                reseal(c.cache.conn)
            try:
                result, hung = _bounded_flush(c)
            except Exception as exc:  # before: JSONDecodeError out of every flush
                result, hung = None, f"{type(exc).__name__}: {exc}"
            good = (hung is None and result.quarantined == 1 and result.acknowledged == 4 and result.remaining == 0
                    and c.status()["quarantined"] == 1 and events.once(ids[1:]))
            _ok(report, UNREADABLE, f"{name}{' (checksum holds)' if sealed else ''}", good, hung or str(result))
            c.close()


# --- a wrong device clock ---

def _clock(report, root: Path, server, key, events) -> None:
    from pocketrank.edge_runtime import SignatureError

    root.mkdir(parents=True)
    year = 365 * 86400
    wall = [978_307_200.0]  # 2001: a clock after a dead battery
    c = device(root / "forwards.sqlite", server, key, clock=lambda: wall[0], max_outbox_age_days=7)
    ids = [c.track(USER, "view", str(i)) for i in range(1, 4)]
    wall[0] = time.time()  # the network corrects it by 20-odd years
    ids.append(c.track(USER, "view", "4"))
    _ok(report, CLOCK, "clock corrected forwards by decades", c.outbox.count() == 4 and not c.status()["dropped"],
        str(c.status()["dropped"]))
    result = c.flush()
    _ok(report, CLOCK, "events from before the correction upload", result.remaining == 0 and events.once(ids),
        str(result))
    c.close()
    for name, offset in (("3 days ahead", 3 * 86400), ("40 days ahead", 40 * 86400), ("10 years ahead", 10 * year),
                         ("10 years behind", -10 * year)):
        c = device(root / f"{name.replace(' ', '-')}.sqlite", server, key, clock=lambda o=offset: time.time() + o)
        ids = [c.track(USER, "click", str(i)) for i in range(1, 4)]
        result = c.flush()
        got = events.rows(ids)
        dated = all(len(v) == 1 and (offset < 0 or abs(v[0][2] - time.time()) < 600) for v in got.values())
        _ok(report, CLOCK, f"upload with the clock {name}", result.remaining == 0 and result.rejected == 0 and dated,
            f"{result}, {got}")
        problem = c.status()["clock_problem"] or ""
        _ok(report, CLOCK, f"status() with the clock {name}",
            ("ahead" if offset > 0 else "behind") in problem and "device clock" in problem, problem)
        if offset >= year:
            try:
                c.sync([USER])
                report(CLOCK, f"sync with the clock {name}", "wrong", "a bundle from today looked valid?")
            except SignatureError as exc:
                report(CLOCK, f"sync with the clock {name}", "refused" if "device clock" in str(exc) else "wrong",
                       str(exc))
        c.close()


# --- damaged rows ---

TARGETS = [("outbox", "body"), ("outbox", "event_id"), ("candidates", "ids"), ("candidates", "scores"),
           ("candidates", "vectors"), ("candidates", "blob+vectors"), ("user_state", "s"), ("user_state", "w")]


def _damage(report, root: Path, server, key, events) -> None:
    root.mkdir(parents=True)
    rng = random.Random(17)
    for table, column in TARGETS:
        for rep in range(3):
            c = device(root / f"{table}-{column}-{rep}.sqlite", server, key)
            c.sync([USER])
            items = rng.sample(["1", "2", "7", "50", "100", "181", "258"], 3)
            ids = [c.track(USER, "view", i) for i in items]
            expected = c.recommend(USER, 10, allow_server=False)
            conn = c.cache.conn
            if table == "outbox":
                victim = rng.choice(ids)
                flip(conn, "outbox", column, victim, rng, where="event_id")
            elif column == "blob+vectors":
                flip(conn, table, "blob", USER, rng)
                flip(conn, table, "vectors", USER, rng)
            else:
                flip(conn, table, column, USER, rng)
            got = c.recommend(USER, 10, allow_server=False)
            finite = all(math.isfinite(i.score) for i in got.items)
            same = (got.source, got.item_ids) == (expected.source, expected.item_ids)
            declared = got.source in ("cache", "popular") and len(got.items) == 10 and sum(c.status()["damaged"].values())
            result = c.flush()
            logged = events.rows(ids)
            index = {e: i for e, i in zip(ids, items)}
            # Whatever reached the server is exactly what was tracked (the item's index is its id here).
            faithful = all(len(v) <= 1 and all(str(item) == index[e] for _, item, _ in v) for e, v in logged.items())
            accounted = sum(len(v) for v in logged.values()) + result.quarantined == len(ids)
            c.sync([USER])
            back = c.recommend(USER, 10, allow_server=False)
            good = finite and (same or declared) and faithful and accounted and result.remaining == 0 and \
                back.source == "edge"
            _ok(report, DAMAGE, f"a flipped byte in {table}.{column} ({rep})", bool(good),
                f"finite={finite} same={same} declared={declared} faithful={faithful} accounted={accounted} "
                f"back={back.source}")
            c.close()


# --- read-only or full storage ---

def _storage(report, root: Path, server, key, events) -> None:
    from ._storagechild import namespaces_work, run_child

    if not namespaces_work():
        print("  device: read-only/full storage skipped: unshare -rm is not allowed here")
        return
    root.mkdir(parents=True)
    out = run_child(scenario="full", dir=str(root / "full"), url=server.url)
    track = out["track"]
    report(STORAGE, "track() on a full disk", "refused" if "storage is full" in track and "delete" not in track
           else "wrong", track)
    first, second, third = out["flush1"], out["flush2"], out["flush3"]
    _ok(report, STORAGE, "flush() on a full disk says the batch is on the server but still queued",
        "could not remove them" in (first.get("error") or "") and first.get("remaining") == 20, str(first))
    _ok(report, STORAGE, "the next flush() does not upload the same batch again", second.get("sent") == 0, str(second))
    _ok(report, STORAGE, "space freed: every event on the server exactly once",
        third.get("remaining") == 0 and events.once(out["promised"]), str(third))
    out = run_child(scenario="readonly", dir=str(root / "ro"), url=server.url)
    for case, said in (("track() on read-only storage", out["track"]),
                       ("opening a cleanly closed database on read-only storage", out["open"])):
        report(STORAGE, case, "refused" if "read-only" in said and "delete" not in said and "5 queued events" in said
               else "wrong", said)
    _ok(report, STORAGE, "read-only storage keeps the queued events, uploaded once it is writable",
        out["queued"] == 5 and out["flush_after"].get("remaining") == 0 and events.once(out["promised"]),
        json.dumps(out)[:300])
    loop = run_child(scenario="loop", dir=str(root / "loop"), url=server.url, runs=10, seed=5)
    promised = [e for r in loop["runs"] for e in r["promised"]]
    rows = events.rows(promised)
    lost, dup = sum(not v for v in rows.values()), sum(len(v) > 1 for v in rows.values())
    corrupt = sum(r["integrity"] != "ok" for r in loop["runs"])
    _ok(report, STORAGE, "10 runs with the disk filling at a random point", lost == dup == corrupt == 0,
        f"{len(promised)} promised, {lost} lost, {dup} duplicated, {corrupt} corrupted")
