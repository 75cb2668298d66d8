"""RunningMetrics: the collector's figures, kept event by event instead of recomputed from the log."""

from __future__ import annotations

import random
import time

import pytest

from pocketrank.server.monitoring import collector
from pocketrank.server.monitoring.running import RunningMetrics
from pocketrank.server.stores.base import LogEntry
from tests.factories import event

PRICES = {i: float(5 + i) for i in range(1, 30)}
TYPES = ("impression", "impression", "impression", "view", "click", "add_to_cart", "purchase", "search")
CONTEXTS = ({}, {}, {"source": "server"}, {"source": "edge", "platform": "android"},
            {"model_version": "m1"}, {"source": ""}, {"connectivity": "offline", "segment": "gender=F"})


def random_log(seed: int, n: int = 1500) -> list:
    """Events as they would be logged: out of timestamp order (offline devices upload late), some in
    named sessions, the rest loose (sessionized per user and device by the 30-minute gap)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        user = f"u{rng.randrange(25)}"
        loose = rng.random() < 0.5
        out.append(event(rng.choice(TYPES), rng.randrange(1, 30), n=i, user=user,
                         device=f"d{rng.randrange(2)}", ts=1_700_000_000 + rng.uniform(0, 86_400 * 2),
                         session="" if loose else f"s{rng.randrange(120)}",
                         context=rng.choice(CONTEXTS)))
    return out


def fold(events, looks: int = 1) -> RunningMetrics:
    running = RunningMetrics()
    step = -(-len(events) // looks)
    for start in range(0, len(events), step):
        for pos, e in enumerate(events[start:start + step], start + 1):
            running.add(e, pos, PRICES.get(e.item_id, 0.0) if e.type == "purchase" else 0.0)
    return running


def assert_same_figures(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for k, v in want.items():
        if isinstance(v, float):
            assert got[k] == pytest.approx(v, rel=1e-9), k
        else:
            assert got[k] == v, k


@pytest.mark.parametrize("seed", range(4))
def test_the_figures_are_the_collectors_on_a_random_log(seed):
    events = random_log(seed)
    want = collector.summarize(events, PRICES)
    got = fold(events, looks=7).summary(window=10 * 86_400, bucket=3_600)
    assert_same_figures(got["overall"], want["overall"])
    assert got["by_segment"].keys() == want["by_segment"].keys()
    for key, values in want["by_segment"].items():
        assert got["by_segment"][key].keys() == values.keys(), key
        for value, figures in values.items():
            assert_same_figures(got["by_segment"][key][value], figures)
    want_ts = collector.timeseries(events, 3_600, PRICES)
    assert len(got["timeseries"]) == len(want_ts)
    for g, w in zip(got["timeseries"], want_ts):
        assert_same_figures(g, w)
    assert got["window"]["events"] == len(events)


def test_a_late_event_bridges_two_loose_sessions():
    t = 1_700_000_000.0
    first, second = event("impression", 1, ts=t, session=""), event("click", 1, ts=t + 3_000, session="")
    running = fold([first, second])
    assert running.n_sessions == 2  # 50 minutes apart: two sessions, each...
    assert running.summary(86_400, 3_600)["overall"]["bounces"] == 1  # ...the first one a bounce
    running.add(event("view", 2, ts=t + 1_500, session=""), 3)  # uploaded late, in between
    assert running.n_sessions == 1
    overall = running.summary(86_400, 3_600)["overall"]
    assert (overall["sessions"], overall["bounces"], overall["events"]) == (1, 0, 3)


def test_a_window_holds_the_sessions_that_started_in_it():
    t = 1_700_000_000.0
    events = [event("impression", 1, ts=t, session="old"), event("click", 1, ts=t + 7_000, session="old"),
              event("impression", 2, ts=t + 5_000, session="new"), event("purchase", 2, ts=t + 7_200,
                                                                         session="new")]
    got = fold(events).summary(window=3_600, bucket=600)
    assert got["window"]["until"] == t + 7_200 and got["window"]["since"] == t + 3_600
    assert got["overall"]["sessions"] == 1 and got["overall"]["events"] == 2  # "old" started before the window
    assert got["overall"]["revenue"] == PRICES[2]
    assert got == collector_of([e for e in events if e.session_id == "new"], 3_600, 600, got["window"])


def collector_of(events, window, bucket, window_field):
    return {"window": window_field, **collector.summarize(events, PRICES),
            "timeseries": collector.timeseries(events, bucket, PRICES)}


def test_memory_is_bounded_by_the_newest_sessions():
    running = RunningMetrics(max_sessions=100, max_clicks=50)
    for i in range(1_000):
        running.add(event("click", 1, ts=1_700_000_000.0 + i, session=f"s{i}"), i + 1)
        if i % 37 == 0:
            running.look(EmptyLog())
    running.look(EmptyLog())
    assert running.n_sessions <= 110 and len(running.clicks) == 50
    starts = sorted(a.start for a in running.sessions())
    assert starts[-1] == 1_700_000_000.0 + 999 and starts[0] >= 1_700_000_000.0 + 999 - 110
    assert running.clicks_after(0)[-1] == ("u1", 1_700_000_999.0, 1)


class EmptyLog:
    def iter_log(self, after):
        return iter(())


class ListLog:
    """A log with the store's reading interface (iter_log, get_items), to count what each look reads."""

    def __init__(self):
        self.entries: list[LogEntry] = []
        self.read = 0

    def append(self, *events):
        for e in events:
            self.entries.append(LogEntry(len(self.entries) + 1, e))

    def iter_log(self, after):
        for entry in self.entries[after:]:
            self.read += 1
            yield entry

    def get_items(self, ids):
        return {i: type("Item", (), {"price": PRICES[i]})() for i in ids if i in PRICES}


def test_each_look_reads_only_what_was_logged_since_the_last_one():
    log = ListLog()
    events = random_log(9, 600)
    log.append(*events[:400])
    running = RunningMetrics(head=0, now=0.0)
    assert running.look(log, now=1.0) == 400 and log.read == 400
    assert running.look(log, now=2.0) == 0 and log.read == 400
    log.append(*events[400:])
    assert running.look(log, now=3.0) == 200 and log.read == 600
    assert_same_figures(running.summary(10 * 86_400, 3_600)["overall"],
                        collector.summarize(events, PRICES)["overall"])
    # 600 entries logged after `head`, over 3 s: reported over a minute, as the old endpoint did
    assert running.events_per_second() == pytest.approx(600 / 60)
    running.look(log, now=200.0)
    assert running.events_per_second() == 0.0  # nothing logged in the last minute


def test_the_endpoint_folds_incrementally(api):
    from tests.factories import event_dict

    running = api.application.extensions["pocketrank.metrics"]
    store = api.application.extensions["pocketrank"].store
    assert api.get("/v1/metrics/summary").status_code == 200
    assert running.pos == store.log_head()
    now = time.time()
    batch = [event_dict(f"inc-{i}", "inc-user", 1 + i, "impression", ts=now - 10, session_id="inc-s")
             for i in range(3)]
    assert api.post("/v1/events", json={"events": batch}).get_json()["accepted"] == 3
    assert running.look(store) == 3  # only the new entries
    assert running.look(store) == 0
    s = api.get("/v1/metrics/summary?window=3600").get_json()
    assert s["overall"]["impressions"] == 3 and s["overall"]["sessions"] == 1 and s["overall"]["bounces"] == 1


def test_a_summary_is_recomputed_at_most_once_a_second_while_events_arrive():
    log = ListLog()
    log.append(*random_log(3, 100))
    running = RunningMetrics(now=0.0)
    running.look(log, now=0.0)
    first = running.recent_summary(86_400, 3_600, now=0.0)
    log.append(event("click", 1, ts=first["window"]["until"], session="late"))
    running.look(log, now=0.5)
    assert running.recent_summary(86_400, 3_600, now=0.5) is first  # new events, but asked within a second
    fresh = running.recent_summary(86_400, 3_600, now=1.5)
    assert fresh is not first and fresh["overall"]["events"] == first["overall"]["events"] + 1
    assert running.recent_summary(86_400, 3_600, now=100.0) is fresh  # nothing new since: nothing to redo
    assert running.recent_summary(3_600, 3_600, now=100.0) is not fresh  # another window is its own


def assert_same_summary(got: dict, want: dict) -> None:
    assert got["window"] == want["window"]
    assert_same_figures(got["overall"], want["overall"])
    assert got["by_segment"].keys() == want["by_segment"].keys()
    for key, values in want["by_segment"].items():
        assert got["by_segment"][key].keys() == values.keys(), key
        for value, figures in values.items():
            assert_same_figures(got["by_segment"][key][value], figures)
    assert [(b["start"], b["end"]) for b in got["timeseries"]] == [(b["start"], b["end"]) for b in want["timeseries"]]
    for g, w in zip(got["timeseries"], want["timeseries"]):
        assert_same_figures(g, w)


@pytest.mark.parametrize("seed", range(3))
def test_the_running_totals_equal_a_recount_after_every_step_of_a_stream(seed):
    """The windows' totals, kept event by event (sessions merging, starting earlier, leaving the window,
    forgotten past the cap), equal a recount from the held sessions after every step."""
    events = random_log(100 + seed, 1200)
    running = RunningMetrics(max_sessions=150)
    windows = ((6 * 3_600.0, 1_800.0), (86_400.0, 3_600.0))
    for w, b in windows:
        running.summary(w, b)  # kept from the start, so every event goes through the running totals
    for pos, e in enumerate(events, 1):
        running.add(e, pos, PRICES.get(e.item_id, 0.0) if e.type == "purchase" else 0.0)
        if pos % 97 == 0:
            running.look(EmptyLog())  # forgets the oldest sessions past the cap
            for w, b in windows:
                assert_same_summary(running.summary(w, b), running.summary_by_pass(w, b))
    running.look(EmptyLog())
    assert running.n_sessions <= 165
    for w, b in windows:
        assert_same_summary(running.summary(w, b), running.summary_by_pass(w, b))


def test_a_gauge_equals_its_recount_from_the_log_after_a_stream_of_events():
    """The overall CTR and bounce rate /metrics serves, after events arrived in many looks, equal
    collector.summarize over the same events from scratch."""
    log = ListLog()
    events = random_log(42, 2000)
    running = RunningMetrics(now=0.0)
    running.look(log, now=0.0)
    running.summary(10 * 86_400, 3_600)
    for i in range(0, len(events), 50):
        log.append(*events[i:i + 50])
        running.look(log, now=i / 50)
    got = running.summary(10 * 86_400, 3_600)["overall"]
    want = collector.summarize(events, PRICES)["overall"]
    assert got["ctr"] == pytest.approx(want["ctr"], rel=1e-12)
    assert got["bounce_rate"] == pytest.approx(want["bounce_rate"], rel=1e-12)
    assert_same_figures(got, want)


@pytest.mark.parametrize("ratio", [0, 10**9])  # a large look drops the views / updates them entry by entry
def test_a_large_look_gives_the_recount_whether_it_rebuilds_the_views_or_not(ratio, monkeypatch):
    from pocketrank.server.monitoring import running as running_mod

    monkeypatch.setattr(running_mod, "REBUILD_RATIO", ratio)
    log = ListLog()
    events = random_log(7, 12_000)
    log.append(*events[:500])
    running = RunningMetrics(now=0.0)
    running.look(log, now=0.0)
    running.summary(86_400, 3_600)
    log.append(*events[500:])
    assert running.look(log, now=1.0) == 11_500
    assert bool(running._views) == (ratio > 0)
    assert_same_summary(running.summary(86_400, 3_600), running.summary_by_pass(86_400, 3_600))
    assert_same_figures(running.summary(10 * 86_400, 3_600)["overall"], collector.summarize(events, PRICES)["overall"])


class SlowLog(ListLog):
    """A ListLog whose every read takes a little time, as a long store read does."""

    def iter_log(self, after):
        for entry in super().iter_log(after):
            time.sleep(0.0002)
            yield entry


def test_a_look_with_a_deadline_leaves_a_long_backlog_to_a_background_read():
    log = SlowLog()
    events = random_log(11, 3_000)
    log.append(*events)
    running = RunningMetrics(now=0.0)
    started = time.monotonic()
    with running.lock:
        first = running.look(log, until=time.monotonic())  # no time at all: one chunk, then hand over
    assert time.monotonic() - started < 0.5  # not the 3,000 entries' read (0.6 s of sleeps alone)
    assert 0 < first < 3_000 and running.following and not running.complete
    with running.lock:
        assert running.look(log) == 0  # the background read owns the tail: nothing read twice
    assert running.wait(60) and running.complete and not running.following
    assert running.pos == 3_000 and log.read == 3_000  # every entry read exactly once
    assert_same_figures(running.summary(10 * 86_400, 3_600)["overall"], fold(events).summary(10 * 86_400, 3_600)["overall"])
    log.append(event("click", 1, ts=events[0].timestamp, session="after"))
    with running.lock:
        assert running.look(log, until=time.monotonic() + 10) == 1 and not running.following


def test_a_background_read_that_fails_leaves_the_next_look_to_retry():
    class FailingLog(ListLog):
        fail_after = 600

        def iter_log(self, after):
            for n, entry in enumerate(super().iter_log(after)):
                if self.fail_after is not None and n >= self.fail_after:
                    raise ConnectionError("the store went away")
                yield entry

    log = FailingLog()
    events = random_log(12, 1_000)
    log.append(*events)
    running = RunningMetrics(now=0.0)
    with running.lock:
        running.look(log, until=time.monotonic())
    assert running.wait(60) and not running.complete  # stopped where the store failed
    stopped = running.pos
    assert 0 < stopped < 1_000
    log.fail_after = None
    with running.lock:
        assert running.look(log) == 1_000 - stopped
    assert running.complete
    assert_same_figures(running.summary(10 * 86_400, 3_600)["overall"], fold(events).summary(10 * 86_400, 3_600)["overall"])
