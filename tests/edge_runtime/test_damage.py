"""Damage to what the device stores (a flipped byte in a queued event, a packed candidate row, a user state,
a held record) is found by the rows' checksums and repaired or reported: never a wrong upload, a changed
top 10 or a NaN score. Real SQLite files, the real Flask app; the damage is written with plain SQL, as flash
wear or a stray edit would leave it (the checksums are not recomputed)."""

from __future__ import annotations

import math
import random

import pytest

USER = "196"


@pytest.fixture
def app(home):
    """The shared fixture's app with the sync rate limit off: the damage loop syncs one device dozens of
    times in a few seconds, far past what a phone does (and what the limit is for)."""
    from pocketrank.server.api.app import create_app
    from pocketrank.server.config import Config

    return create_app(Config(home=home, sync_rate=0))


def flip(device, table: str, column: str, key: str, rng: random.Random, where: str = "user_id") -> None:
    """Change one byte of one stored value, keeping its SQLite type."""
    conn = device.cache.conn
    value = conn.execute(f"SELECT {column} FROM {table} WHERE {where} = ?", (key,)).fetchone()[0]
    if isinstance(value, float):
        conn.execute(f"UPDATE {table} SET {column} = ? WHERE {where} = ?", (value * 1.5 + 1.0, key))
        return
    data = bytearray(value.encode() if isinstance(value, str) else value)
    i = rng.randrange(len(data))
    data[i] = (data[i] ^ (1 << rng.randrange(7))) or 1  # ASCII stays ASCII, and no byte becomes 0
    conn.execute(f"UPDATE {table} SET {column} = ? WHERE {where} = ?",
                 (data.decode() if isinstance(value, str) else bytes(data), key))


def server_events(app, ids: list[str]) -> dict[str, tuple]:
    store = app.extensions["pocketrank"].store
    rows = store.db.execute(f"SELECT event_id, type, item_id, timestamp FROM events WHERE event_id IN "
                            f"({','.join('?' * len(ids))})", ids).fetchall()
    return {r[0]: tuple(r[1:]) for r in rows}


def test_a_changed_byte_in_a_queued_event_never_uploads_another_event(device, app):
    device.sync([USER])
    kept = [device.track(USER, "click", item) for item in ("1", "2")]
    hit = device.track(USER, "click", "50")
    # One byte of its body: "50" becomes "51", still valid JSON and a valid product.
    device.cache.conn.execute("UPDATE outbox SET body = replace(body, '\"item_id\":\"50\"', '\"item_id\":\"51\"') "
                              "WHERE event_id = ?", (hit,))
    result = device.flush()
    assert (result.quarantined, result.acknowledged, result.remaining, result.error) == (1, 2, 0, None)
    assert set(server_events(app, kept + [hit])) == set(kept)  # never uploaded as a click on another item
    status = device.status()
    assert status["quarantined"] == 1 and status["damaged"] == {"event": 1}
    body, detail = device.cache.conn.execute("SELECT body, detail FROM damaged WHERE key = ?", (hit,)).fetchone()
    assert '"item_id":"51"' in body and "checksum" in detail  # the bytes are kept for whoever investigates


def test_a_changed_byte_in_a_queued_event_id_neither_loops_nor_blocks_the_others(device, app):
    """Before: the server acknowledged the body's id, the delete matched no row, and flush() sent the same
    batch thousands of times a second, never returning."""
    ids = [device.track(USER, "view", str(i)) for i in range(1, 6)]
    device.cache.conn.execute("UPDATE outbox SET event_id = 'x' || substr(event_id, 2) WHERE event_id = ?", (ids[2],))
    result = device.flush()
    assert (result.quarantined, result.acknowledged, result.remaining, result.batches) == (1, 4, 0, 1)
    assert set(server_events(app, ids)) == set(ids) - {ids[2]}


def test_an_unreadable_queued_event_is_quarantined_and_the_rest_upload(device, app):
    """Before: one body that was not JSON raised JSONDecodeError before anything was sent, on every flush."""
    from .queued import reseal

    ids = [device.track(USER, "view", str(i)) for i in range(1, 4)]
    device.cache.conn.execute("UPDATE outbox SET body = substr(body, 1, 20) WHERE event_id = ?", (ids[0],))
    reseal(device)  # even with a checksum that matches (a row an older SDK wrote that way)
    result = device.flush()
    assert (result.quarantined, result.acknowledged, result.remaining) == (1, 2, 0)
    assert set(server_events(app, ids)) == set(ids[1:])
    assert device.status()["quarantined"] == 1


@pytest.mark.parametrize("column", ["ids", "scores", "vectors"])
def test_a_damaged_packed_row_is_rebuilt_from_the_held_record_not_served(device, column):
    device.sync([USER])
    before = device.recommend(USER, 10, allow_server=False)
    flip(device, "candidates", column, USER, random.Random(column))
    after = device.recommend(USER, 10, allow_server=False)
    assert (after.source, after.item_ids) == ("edge", before.item_ids)
    assert all(math.isfinite(i.score) for i in after.items)
    assert device.status()["damaged"] == {"candidates": 1}
    assert device.recommend(USER, 10, allow_server=False).item_ids == before.item_ids  # repaired for good


def test_a_damaged_row_and_record_fall_back_and_are_fetched_again(device):
    device.sync([USER])
    before = device.recommend(USER, 10, allow_server=False)
    rng = random.Random(7)
    flip(device, "candidates", "vectors", USER, rng)
    flip(device, "candidates", "blob", USER, rng)
    after = device.recommend(USER, 10, allow_server=False)
    assert after.source == "popular" and len(after.items) == 10  # declared as such, never a wrong "edge" list
    assert device.cache.candidates(USER)[1] == 0  # marked to be fetched whole
    assert USER in device.sync([USER]).users_updated
    again = device.recommend(USER, 10, allow_server=False)
    assert (again.source, again.item_ids) == ("edge", before.item_ids)


@pytest.mark.parametrize("column", ["s", "w"])
def test_a_damaged_user_state_gives_no_nan_and_comes_back_with_the_next_sync(device, column):
    device.sync([USER])
    device.track(USER, "click", "1")
    before = device.recommend(USER, 10, allow_server=False)
    flip(device, "user_state", column, USER, random.Random(column))
    after = device.recommend(USER, 10, allow_server=False)
    # Without a sound state the device ranks as the server did (source "cache"), and says so.
    assert after.source == "cache" and all(math.isfinite(i.score) for i in after.items)
    assert device.status()["damaged"] == {"state": 1}
    device.flush()
    device.sync([USER])  # the server's live state, which holds the click
    again = device.recommend(USER, 10, allow_server=False)
    assert (again.source, again.item_ids) == ("edge", before.item_ids)


def test_a_damaged_state_is_not_folded_onto(device):
    device.sync([USER])
    flip(device, "user_state", "s", USER, random.Random(3))
    device.track(USER, "click", "1")  # folds onto an empty state, not onto the damaged bytes
    state = device.cache.user_state(USER)
    assert state is not None and state.n_events == 1 and all(math.isfinite(x) for x in state.s)
    assert device.status()["damaged"] == {"state": 1}


TARGETS = [("outbox", "body"), ("outbox", "event_id"), ("candidates", "ids"), ("candidates", "scores"),
           ("candidates", "vectors"), ("candidates", "blob+vectors"), ("user_state", "s"), ("user_state", "w")]


def test_random_damage_loop_figures(device, app):
    """One random byte of one stored value per run, RUNS times: figures printed, and the promise held
    (no event lost unreported, duplicated or uploaded changed; no wrong answer)."""
    runs, rng = 48, random.Random(17)
    device.sync([USER])
    tracked: dict[str, tuple] = {}
    figures = dict.fromkeys(("promised", "uploaded", "quarantined", "lost", "duplicated", "corrupted",
                             "wrong_answers", "fallbacks"), 0)
    index_of = app.extensions["pocketrank"].catalogue.index_of
    for run in range(runs):
        items = rng.sample(["1", "2", "7", "50", "100", "181", "258"], 3)
        new = [device.track(USER, "view", item, timestamp=1_700_000_000.0 + run * 10 + i) for i, item in enumerate(items)]
        for event_id, item, i in zip(new, items, range(3)):
            tracked[event_id] = ("view", index_of[item], 1_700_000_000.0 + run * 10 + i)
        expected = device.recommend(USER, 10, allow_server=False)
        table, column = TARGETS[run % len(TARGETS)]
        if table == "outbox":
            flip(device, "outbox", column, rng.choice(new), rng, where="event_id")
        elif column == "blob+vectors":
            flip(device, table, "blob", USER, rng)
            flip(device, table, "vectors", USER, rng)
        else:
            flip(device, table, column, USER, rng)
        got = device.recommend(USER, 10, allow_server=False)
        finite = all(math.isfinite(i.score) for i in got.items)
        same = got.source == expected.source and got.item_ids == expected.item_ids
        declared = got.source in ("cache", "popular") and len(got.items) == 10  # and status()["damaged"] says why
        figures["fallbacks"] += not same and declared
        figures["wrong_answers"] += not finite or not (same or declared)
        device.flush()
        device.sync([USER])  # fetches again what was marked
    on_server = server_events(app, list(tracked))
    quarantined = {r[0] for r in device.cache.conn.execute("SELECT key FROM damaged WHERE kind = 'event'")}
    counts = app.extensions["pocketrank"].store.db.execute(
        f"SELECT COUNT(*) FROM events WHERE event_id IN ({','.join('?' * len(tracked))}) GROUP BY event_id",
        list(tracked)).fetchall()
    figures["promised"] = len(tracked)
    figures["uploaded"] = len(on_server)
    figures["quarantined"] = len(quarantined)  # under the id its row held, which the damage may have changed
    figures["lost"] = len(tracked) - len(on_server) - len(quarantined) - device.outbox.count()
    figures["duplicated"] = sum(c[0] > 1 for c in counts)
    figures["corrupted"] = sum(on_server[e][0] != t[0] or on_server[e][1] != t[1] or abs(on_server[e][2] - t[2]) > 1e-3
                               for e, t in tracked.items() if e in on_server)
    print(f"\ndamage loop: {runs} runs: {figures}")
    assert figures["lost"] == figures["duplicated"] == figures["corrupted"] == figures["wrong_answers"] == 0
    assert figures["uploaded"] + figures["quarantined"] == figures["promised"]
    assert sum(device.status()["damaged"].values()) >= runs - 2  # (a flip may hit a byte a repair rewrites anyway)
