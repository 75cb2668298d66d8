"""The outbox's bounds (count, bytes, age), its drop order, and its batches, on a real SQLite file."""

import random
import sqlite3

import pytest

from pocketrank.edge_runtime import EdgeClient, StorageError
from pocketrank.edge_runtime.outbox import DROP_ORDER

DEAD = "http://127.0.0.1:9"  # nothing listens there; these tests never reach the network


def client(tmp_path, clock=None, **limits):
    # One injected clock stands for both the wall clock and the steady one the outbox ages events on.
    extra = {"clock": clock, "monotonic": clock} if clock else {}
    return EdgeClient(tmp_path / "d.sqlite", None, base_url=DEAD, **extra, **limits)


def queued(c):
    return [e["type"] for e in c.outbox.batch(100_000, 1 << 30)]


def test_the_outbox_drops_views_before_purchases(tmp_path):
    c = client(tmp_path, max_outbox_events=4)
    for i in range(3):
        c.track("u", "purchase", 100 + i)
    for i in range(3):
        c.track("u", "view", 200 + i)
    assert queued(c) == ["purchase"] * 3 + ["view"]  # the oldest views went first
    assert c.status()["dropped"] == {"view": 2}
    for i in range(3):
        c.track("u", "purchase", 300 + i)
    assert queued(c).count("purchase") == 6  # never dropped, even past the bound...
    status = c.status()
    assert status["outbox_over_bounds"] and status["outbox"] == 6  # ...and the bound's breach is reported
    c.close()


def test_drops_follow_the_documented_order(tmp_path):
    c = client(tmp_path, max_outbox_events=6)
    for etype in ("add_to_cart", "click", "search", "view", "impression", "purchase"):
        c.track("u", etype, 1 if etype != "search" else None, query="shoes" if etype == "search" else None)
    for n, expect_gone in enumerate(DROP_ORDER, start=1):
        c.track("u", "purchase", 10 + n)
        assert expect_gone not in queued(c)
        assert c.outbox.dropped == dict.fromkeys(DROP_ORDER[:n], 1)
    c.close()


def test_the_bytes_bound_drops_too_and_is_reported_by_reason(tmp_path):
    c = client(tmp_path, max_outbox_bytes=4000)
    for i in range(40):
        c.track("u", "search", query=f"red shoes size {i} " + "x" * 100)
    events, nbytes = c.outbox.totals()
    assert nbytes <= 4000 and 0 < events < 40
    assert c.outbox.dropped_by_reason() == {"bytes": {"search": 40 - events}}
    c.close()


def test_old_events_age_out_except_purchases(tmp_path):
    now = [1_700_000_000.0]
    c = client(tmp_path, clock=lambda: now[0], max_outbox_age_days=7)
    c.track("u", "click", 1)
    c.track("u", "purchase", 2)
    now[0] += 8 * 86400
    c.track("u", "view", 3)
    assert queued(c) == ["purchase", "view"]
    assert c.outbox.dropped_by_reason() == {"age": {"click": 1}}
    assert c.status()["outbox_oldest_age"] == pytest.approx(8 * 86400)
    c.close()


def test_the_drop_report_survives_a_restart(tmp_path):
    c = client(tmp_path, max_outbox_events=1)
    c.track("u", "view", 1)
    c.track("u", "view", 2)
    c.close()
    c = client(tmp_path)
    assert c.status()["dropped"] == {"view": 1}
    c.close()


def test_running_totals_match_the_rows_after_any_mix_of_writes(tmp_path):
    rng = random.Random(3)
    c = client(tmp_path, max_outbox_events=50, max_outbox_bytes=9000)
    for _ in range(400):
        if rng.random() < 0.85:
            etype = rng.choice(["view", "click", "impression", "add_to_cart", "purchase"])
            c.track("u", etype, rng.randint(1, 500))
        else:
            batch = c.outbox.batch(rng.randint(1, 20))
            c.outbox.acknowledge([{"event_id": e["event_id"], "status": "accepted"} for e in batch], batch)
    counted = c.cache.conn.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM outbox").fetchone()
    assert c.outbox.totals() == tuple(counted)
    non_purchase = c.cache.conn.execute("SELECT COUNT(*) FROM outbox WHERE type != 'purchase'").fetchone()[0]
    assert non_purchase == 0 or counted[0] <= 50
    c.close()


def test_batches_are_bounded_and_keyed_by_their_events(tmp_path):
    c = client(tmp_path)
    for i in range(30):
        c.track("u", "search", query="q" * 200 + str(i))
    first = c.outbox.next_batch(100, max_bytes=2000)
    assert 1 <= len(first) < 30
    assert c.outbox.next_batch(100, max_bytes=2000).key == first.key  # a retry sends the same key
    c.outbox.acknowledge([{"event_id": e["event_id"], "status": "accepted"} for e in first.events], first.events)
    assert c.outbox.next_batch(100, max_bytes=2000).key != first.key
    c.close()


def test_track_has_committed_before_it_returns(tmp_path):
    c = client(tmp_path)
    event_id = c.track("u", "purchase", 5)
    other = sqlite3.connect(tmp_path / "d.sqlite")  # another connection sees only committed data
    assert other.execute("SELECT type FROM outbox WHERE event_id = ?", (event_id,)).fetchone() == ("purchase",)
    other.close()
    c.close()


def test_a_full_disk_refuses_the_event_loudly(tmp_path):
    c = client(tmp_path)
    c.track("u", "view", 1)
    pages = c.cache.conn.execute("PRAGMA page_count").fetchone()[0]
    c.cache.conn.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(StorageError, match="storage is full"):
        for i in range(200):  # a few fit in free pages; then the database must grow
            c.track("u", "search", query="x" * 200 + str(i))
    assert c.outbox.totals()[0] == c.cache.conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
    c.close()


def test_a_clock_corrected_forwards_ages_no_event(tmp_path):
    """A phone whose clock restarted years behind, then corrected by the network: seconds-old events
    looked years old on the wall clock and were dropped "by age". The steady clock saw seconds pass."""
    wall = [978_307_200.0]  # 2001: the clock after a dead battery
    c = EdgeClient(tmp_path / "d.sqlite", None, base_url=DEAD, clock=lambda: wall[0], max_outbox_age_days=7)
    c.track("u", "click", 1)
    c.track("u", "view", 2)
    wall[0] = 1_900_000_000.0  # corrected forwards by 29 years
    c.track("u", "view", 3)
    assert queued(c) == ["click", "view", "view"] and c.status()["dropped"] == {}
    assert c.status()["outbox_oldest_age"] < 60
    c.close()
    c = EdgeClient(tmp_path / "d.sqlite", None, base_url=DEAD, clock=lambda: wall[0], max_outbox_age_days=7)
    c.track("u", "view", 4)  # the next process continues the steady clock (same boot): still nothing aged
    assert len(queued(c)) == 4 and c.status()["dropped"] == {}
    c.close()


def test_across_a_reboot_the_wall_clock_counts_at_most_a_day():
    from pocketrank.edge_runtime.steadyclock import UNWITNESSED_CAP, SteadyClock

    wall, mono = [1_000.0], [50.0]
    before = SteadyClock(lambda: wall[0], lambda: mono[0], boot="boot-a")
    before.resume(None)
    anchor = before.anchor()
    wall[0] += 5 * 365 * 86400  # the clock was set five years forwards while the phone was off
    mono[0] = 3.0  # a new boot's clock starts again
    after = SteadyClock(lambda: wall[0], lambda: mono[0], boot="boot-b")
    after.resume(anchor)
    assert after.now() == 1_000.0 + UNWITNESSED_CAP
    wall[0] = 0.0  # and set back to 1970: the steady clock never steps back
    again = SteadyClock(lambda: wall[0], lambda: mono[0], boot="boot-c")
    again.resume(after.anchor())
    assert again.now() == after.now()
