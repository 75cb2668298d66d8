"""The business figures kept up to date event by event, so a request adds up sessions, never rereads the log.

`GET /v1/metrics/summary` and `/metrics` used to read and sessionize the whole event log on every
request: most of a second of CPU at 100,000 events, enough for a few callers to slow every
recommendation. A `RunningMetrics` (one per app, so one per worker process) instead reads only the
log entries that are new since its last look and folds each into its session's running aggregate:
the counts of its events by their own context, whether it showed, engaged and converted, and the
first value of each context key. A request then sums the aggregates of the sessions in its window,
at a cost bound by the number of sessions held, whatever the size of the log. Better still, each
(window, bucket) asked for is kept as running totals (window.py's WindowView: sessions' shares
added and taken back as they change and as the window moves), so a summary costs O(segment values
+ buckets), not O(sessions); `summary_by_pass` is the pass over the sessions, kept as the reference.

The figures are `collector.summarize` and `collector.timeseries` over the same sessions (the same
sessionizing, segment attribution and definitions; tests/server/monitoring/test_running.py checks
them against each other on random logs), with two differences, both deliberate:

- a window holds the sessions that *started* in it, each whole; a session that began before the
  window is left out rather than counted from its middle (which would make it look like a bounce);
- a purchase is priced when this process first reads it (the product's price then), not at the
  price the product has when the figures are asked for.

Bounds: the newest MAX_SESSIONS sessions by start (older ones are forgotten, so a very late event
of a forgotten session starts a new one) and the newest MAX_CLICKS clicks (the shadow's hit rates).
A look that reads more than a READ_CHUNK and REBUILD_RATIO times a window's sessions (a new worker's
first look, a burst) drops the views rather than update them entry by entry (an event costs about as
much as 4 sessions of a rebuild), and the next summary of each window rebuilds its view in one pass
over the held sessions. A summary is recomputed at most once per FRESH_SECONDS for one (window, bucket) while events keep
arriving (and not at all while none do), so however many callers poll, a process spends at most
about one pass over its sessions per second on each window they ask for.
A new worker reads the log from its start once; after that each look reads what was logged since
the previous one. Neither may hold a request up for long: a look given a deadline (`until`) folds in
small chunks and, if the deadline passes before the log's end, hands the rest of the read to a
background thread (`following`) and returns. While that thread runs, looks return at once (it owns
the log's tail), a summary waits at most for one of its slices (it takes the lock per SLICE_SECONDS),
and `complete` says whether the figures have ever reached the log's end: before that they hold only
the log's oldest part, so /metrics leaves them out rather than publish a wrong CTR (server/api/monitoring.py).
At 1 M events a new worker's first read takes about 15 s (bench metrics); a scrape meanwhile costs milliseconds.
"""

from __future__ import annotations

import logging
import threading
import time
from bisect import bisect_right
from collections import defaultdict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pocketrank.shared.schemas import Event

from .collector import ENGAGED, SEGMENT_KEYS, SESSION_GAP_S, SHOWN, UNKNOWN, Tally
from .window import WindowView

MAX_SESSIONS = 50_000  # a summary costs about 12 us per session in its window
MAX_CLICKS = 100_000
FRESH_SECONDS = 1.0  # a summary asked again within this long is answered from the last one
MAX_KEPT_SUMMARIES = 16
REBUILD_RATIO = 4  # a look reading more entries than this many times a view's sessions rebuilds it instead
MAX_VIEWS = 4  # (window, bucket) pairs kept as running totals; each costs a few us per event folded
READ_CHUNK = 5_000  # log entries priced and folded together (one price lookup per chunk)
RATE_WINDOW_S = 60.0  # events_per_second: over about the last minute
DEADLINE_CHUNK = 100  # entries folded between two looks at a deadline (a few ms)
SLICE_SECONDS = 0.02  # the background read holds the lock this long at a time, so a summary waits at most that

log = logging.getLogger(__name__)

Click = tuple[str, float, int]  # user id, timestamp, item index


@dataclass(slots=True)
class SessionAgg:
    """One session's running aggregate: exactly what collector.Tally needs of it."""

    user_id: str
    start: float
    end: float
    shown: bool = False
    engaged: bool = False
    purchased: bool = False
    # context key -> (timestamp, log position, value) of the earliest event that carries it:
    # collector.Session.context's "first value", independent of the order events arrive in.
    first: dict[str, tuple[float, int, str]] = field(default_factory=dict)
    # the events' own context -> [events, impressions, clicks, purchases, revenue]
    counts: dict[tuple, list] = field(default_factory=dict)

    def add(self, e: Event, pos: int, price: float) -> None:
        self.start, self.end = min(self.start, e.timestamp), max(self.end, e.timestamp)
        self.shown |= e.type in SHOWN
        self.engaged |= e.type in ENGAGED
        self.purchased |= e.type == "purchase"
        for k, v in e.context:
            held = self.first.get(k)
            if held is None or (e.timestamp, pos) < held[:2]:
                self.first[k] = (e.timestamp, pos, v)
        c = self.counts.get(e.context)
        if c is None:
            c = self.counts[e.context] = [0, 0, 0, 0, 0.0]
        c[0] += 1
        c[1] += e.type == "impression"
        c[2] += e.type == "click"
        if e.type == "purchase":
            c[3] += 1
            c[4] += price

    def absorb(self, other: SessionAgg) -> None:
        """Merge a session an event has just joined to this one (loose sessions only: same user)."""
        self.start, self.end = min(self.start, other.start), max(self.end, other.end)
        self.shown |= other.shown
        self.engaged |= other.engaged
        self.purchased |= other.purchased
        for k, held in other.first.items():
            mine = self.first.get(k)
            if mine is None or held[:2] < mine[:2]:
                self.first[k] = held
        for ctx, c in other.counts.items():
            mine_c = self.counts.get(ctx)
            if mine_c is None:
                self.counts[ctx] = list(c)
            else:
                for i, x in enumerate(c):
                    mine_c[i] += x

    @property
    def bounced(self) -> bool:
        return self.shown and not self.engaged


def _reshapes(agg: SessionAgg, e: Event, pos: int) -> bool:
    """True if adding `e` changes more of its session than its counts: its first event, the start (and so
    its bucket and whether it is in a window), a flag (shown, engaged, purchased) or a first context value."""
    ts = e.timestamp
    if not agg.counts or ts < agg.start:  # a new session is admitted whole
        return True
    if (e.type in SHOWN and not agg.shown) or (e.type in ENGAGED and not agg.engaged) or (
            e.type == "purchase" and not agg.purchased):
        return True
    for k, _ in e.context:
        held = agg.first.get(k)
        if held is None or (ts, pos) < held[:2]:
            return True
    return False


class RunningMetrics:
    """Sessions folded from the log as it grows; `look(store)` catches up, the summaries read what is held.

    Thread-safe: one lock, so one look at a time per process (concurrent callers wait for it and
    then cost no more than what was logged in between)."""

    def __init__(self, head: int = 0, now: float | None = None, max_sessions: int = MAX_SESSIONS,
                 max_clicks: int = MAX_CLICKS, gap: float = SESSION_GAP_S):
        self.lock = threading.Lock()
        self.pos = 0  # the last log position folded
        self.newest = 0.0  # the newest event timestamp seen
        self.max_sessions, self.gap = max_sessions, gap
        self._by_id: dict[str, SessionAgg] = {}
        self._loose: dict[tuple[str, str], list[SessionAgg]] = defaultdict(list)  # sorted by start
        self._n_loose = 0
        self.clicks: deque[tuple[int, str, float, int]] = deque(maxlen=max_clicks)  # (pos, user, ts, item)
        # events_per_second: entries logged after `head` (the log's end when this process started
        # looking), sampled at each look against the monotonic clock.
        self._head = head
        self._new = 0
        self._samples: deque[tuple[float, int]] = deque([(time.monotonic() if now is None else now, 0)])
        self._kept: dict[tuple[float, float], tuple[float, int, dict]] = {}  # (window, bucket) -> (when, pos, summary)
        self._views: dict[tuple[float, float], WindowView] = {}  # the most recently asked last
        self.fresh_seconds = FRESH_SECONDS
        self.complete = False  # the figures have reached the log's end at least once
        self._wanted: dict[tuple[float, float], None] = {}  # (window, bucket) asked for lately, the newest last
        self.caught_up_at: float | None = None  # time.monotonic() of the last look that reached the log's end
        self._follower: threading.Thread | None = None

    # --- folding ---

    def look(self, store: Any, now: float | None = None, until: float | None = None) -> int:
        """Fold what was logged since the last look; returns how many entries this call folded.

        With `until` (a time.monotonic() deadline) it stops at the first chunk past the deadline and
        leaves the rest of the read to a background thread. Callers hold `lock`."""
        if self.following:
            return 0  # the background read owns the log's tail until it reaches the end
        entries = iter(store.iter_log(self.pos))
        read, finished = self._fold_stream(store, entries, until)
        if finished:
            self._end_look(now)
        else:
            self._follower = threading.Thread(target=self._follow, args=(store, entries), daemon=True,
                                              name="pocketrank-metrics-catch-up")
            self._follower.start()
        return read

    @property
    def following(self) -> bool:
        """True while a background thread is reading a backlog a request had no time for."""
        return self._follower is not None and self._follower.is_alive()

    def wait(self, seconds: float) -> bool:
        """Wait up to `seconds` for the background read (call without the lock); True if none runs now."""
        follower = self._follower
        if follower is not None:
            follower.join(seconds)
        return not self.following

    def _follow(self, store: Any, entries: Iterator) -> None:
        """The background read: the rest of `entries`, a slice at a time under the lock."""
        try:
            while True:
                with self.lock:
                    _, finished = self._fold_stream(store, entries, time.monotonic() + SLICE_SECONDS)
                if finished:
                    break
            # Before saying the figures are current, compute those last asked for (a pass over the sessions
            # each, most of a second at 50,000), here rather than in the next request.
            for window, bucket in list(self._wanted):
                with self.lock:
                    self.recent_summary(window, bucket, fresh=True)
            with self.lock:
                self._end_look(None)
        except Exception as exc:  # noqa: BLE001 - a store that fails mid-read: the next request's look retries
            log.warning("the metrics' background read of the event log stopped at position %d: %s: %s",
                        self.pos, type(exc).__name__, exc)

    def _fold_stream(self, store: Any, entries: Iterator, until: float | None) -> tuple[int, bool]:
        """Fold entries in chunks until they end (True) or, with `until`, the first chunk past it (False)."""
        size = READ_CHUNK if until is None else DEADLINE_CHUNK
        read, chunk = 0, []
        for entry in entries:
            chunk.append(entry)
            if len(chunk) >= size:
                read += self._fold_chunk(store, chunk, read, more=True)
                chunk = []
                if until is not None and time.monotonic() > until:
                    return read, False
        read += self._fold_chunk(store, chunk, read)
        return read, True

    def _fold_chunk(self, store: Any, chunk: list, read_before: int, more: bool = False) -> int:
        if more and self._views and read_before + len(chunk) > REBUILD_RATIO * max(v.size for v in self._views.values()):
            self._views.clear()  # cheaper to rebuild each from the sessions when next asked
        read = self._fold(store, chunk)
        if self.n_sessions > self.max_sessions * 2:  # a long read: keep memory bounded as it goes
            self._forget_oldest()
        return read

    def _end_look(self, now: float | None) -> None:
        self._samples.append((time.monotonic() if now is None else now, self._new))
        self._trim_samples()
        if self.n_sessions > self.max_sessions * 1.1:  # amortized: a sort per tenth of the cap
            self._forget_oldest()
        self.complete = True
        self.caught_up_at = time.monotonic()

    def _fold(self, store: Any, entries: list) -> int:
        if not entries:
            return 0
        bought = {e.event.item_id for e in entries if e.event.type == "purchase" and e.event.item_id is not None}
        prices = {i: float(it.price) for i, it in store.get_items(bought).items()} if bought else {}
        for entry in entries:
            e, pos = entry.event, entry.pos
            self.add(e, pos, prices.get(e.item_id, 0.0) if e.type == "purchase" else 0.0)
            if pos > self._head:
                self._new += 1
        self.pos = entries[-1].pos
        return len(entries)

    def add(self, e: Event, pos: int, price: float = 0.0) -> None:
        """Fold one logged event (log position `pos`; `price` for a purchase) into its session."""
        self.newest = max(self.newest, e.timestamp)
        if e.type == "click" and e.item_id is not None:
            self.clicks.append((pos, e.user_id, e.timestamp, int(e.item_id)))
        views = self._views.values()
        if e.session_id:
            agg = self._by_id.get(e.session_id)
            if agg is None:
                agg = self._by_id[e.session_id] = SessionAgg(e.user_id, e.timestamp, e.timestamp)
            self._join(agg, e, pos, price)
            return
        # Without a session id: the user's events on one device, split where they fall silent for
        # more than `gap`. An event joins a session it lies within `gap` of, and may bridge two.
        runs = self._loose[(e.user_id, e.device_id)]
        ts = e.timestamp
        i = bisect_right(runs, ts, key=lambda a: a.start)
        before = runs[i - 1] if i > 0 and ts - runs[i - 1].end <= self.gap else None
        after = runs[i] if i < len(runs) and runs[i].start - ts <= self.gap else None
        if before is not None and after is not None:  # it fills the silence between two: one session now
            for v in views:
                v.retract(before)
                v.retract(after)
            before.absorb(after)
            del runs[i]
            self._n_loose -= 1
        joined = before or after
        if joined is None:
            joined = SessionAgg(e.user_id, ts, ts)
            runs.insert(i, joined)
            self._n_loose += 1
        self._join(joined, e, pos, price, merged=before is not None and after is not None)

    def _join(self, agg: SessionAgg, e: Event, pos: int, price: float, merged: bool = False) -> None:
        """Add an event to its session, and to the views' totals: only its counts when the session keeps
        its start, flags and first context values (most events), else the session's share again (always
        after a merge, which took both shares back)."""
        views = self._views.values()
        if not views:
            agg.add(e, pos, price)
            return
        if merged or _reshapes(agg, e, pos):
            for v in views:
                v.retract(agg)
            agg.add(e, pos, price)
            for v in views:
                v.admit(agg)
                v.advance(self.newest)
            return
        agg.add(e, pos, price)
        counts = [1, e.type == "impression", e.type == "click", e.type == "purchase",
                  price if e.type == "purchase" else 0.0]
        for v in views:
            v.add_counts(agg, e.context, counts)
            v.advance(self.newest)

    @property
    def n_sessions(self) -> int:
        return len(self._by_id) + self._n_loose

    def sessions(self) -> Iterator[SessionAgg]:
        yield from self._by_id.values()
        for runs in self._loose.values():
            yield from runs

    def _forget_oldest(self) -> None:
        starts = sorted(a.start for a in self.sessions())
        cutoff = starts[-self.max_sessions]
        for v in self._views.values():
            for a in self.sessions():
                if a.start < cutoff:
                    v.retract(a)
        self._by_id = {k: a for k, a in self._by_id.items() if a.start >= cutoff}
        loose: dict[tuple[str, str], list[SessionAgg]] = defaultdict(list)
        for key, runs in self._loose.items():
            kept = [a for a in runs if a.start >= cutoff]
            if kept:
                loose[key] = kept
        self._loose = loose
        self._n_loose = sum(len(r) for r in loose.values())

    def _trim_samples(self) -> None:
        now = self._samples[-1][0]
        while len(self._samples) > 2 and self._samples[1][0] <= now - RATE_WINDOW_S:
            self._samples.popleft()

    # --- reading ---

    def events_per_second(self) -> float:
        """Entries logged per second since about a minute ago (since the previous look, if older)."""
        (t0, n0), (t1, n1) = self._samples[0], self._samples[-1]
        return (n1 - n0) / max(RATE_WINDOW_S, t1 - t0)

    def recent_summary(self, window: float, bucket: float, now: float | None = None, fresh: bool = False) -> dict:
        """summary(window, bucket), or the one computed less than FRESH_SECONDS ago (or since which
        nothing was folded): what the endpoints serve. `fresh` computes it anew regardless."""
        now = time.monotonic() if now is None else now
        self.want(window, bucket)
        kept = self._kept.get((window, bucket))
        if not fresh and kept is not None and (kept[1] == self.pos or now - kept[0] < self.fresh_seconds):
            return kept[2]
        figures = self.summary(window, bucket)
        if len(self._kept) >= MAX_KEPT_SUMMARIES:
            self._kept.pop(next(iter(self._kept)))
        self._kept[(window, bucket)] = (now, self.pos, figures)
        return figures

    def want(self, window: float, bucket: float) -> None:
        """Note that (window, bucket) is asked for: a background read computes it before it ends."""
        self._wanted.pop((window, bucket), None)
        self._wanted[(window, bucket)] = None
        if len(self._wanted) > MAX_VIEWS:
            self._wanted.pop(next(iter(self._wanted)))

    def last_summary(self, window: float, bucket: float) -> dict | None:
        """The summary last computed for (window, bucket), however old, without the lock: what a scrape serves
        when the lock is busy (a background read's slice, or its pass over the sessions)."""
        kept = self._kept.get((window, bucket))
        return None if kept is None else kept[2]

    def summary(self, window: float, bucket: float) -> dict:
        """collector.summarize and collector.timeseries of the sessions that started in the window,
        which ends at the newest event seen: from the window's running totals (built in one pass over
        the held sessions the first time a (window, bucket) is asked for, or after a large look)."""
        key = (window, bucket)
        view = self._views.pop(key, None)
        if view is None:
            view = WindowView(window, bucket)
            view.advance(self.newest)
            for a in self.sessions():
                view.admit(a)
            if len(self._views) >= MAX_VIEWS:
                self._views.pop(next(iter(self._views)))  # the least recently asked
        self._views[key] = view
        return view.summary(self.newest)

    def summary_by_pass(self, window: float, bucket: float) -> dict:
        """summary(), computed by a pass over every held session (O(sessions)): the reference the
        running totals are tested against, and what every summary cost before they were kept."""
        if bucket <= 0:
            raise ValueError("bucket must be positive")
        until = self.newest
        since = until - window
        overall = Tally()
        by: dict[str, dict[str, Tally]] = {k: defaultdict(Tally) for k in SEGMENT_KEYS}
        buckets: dict[int, Tally] = defaultdict(Tally)
        for a in self.sessions():
            if a.start < since:
                continue
            ctx = {k: v for k, (_, _, v) in a.first.items()}
            in_bucket = buckets[int(a.start // bucket)]
            for t in (overall, in_bucket, *(by[k][ctx.get(k, UNKNOWN)] for k in SEGMENT_KEYS)):
                t.add_session_flags(a.user_id, a.shown, a.bounced, a.purchased)
            for own_ctx, c in a.counts.items():
                overall.add_counts(*c)
                in_bucket.add_counts(*c)
                own = dict(own_ctx)
                for k in SEGMENT_KEYS:
                    by[k][own.get(k) or ctx.get(k, UNKNOWN)].add_counts(*c)
        return {
            "window": {"since": since, "until": until, "seconds": window, "events": overall.events,
                       "sessions": overall.sessions},
            "overall": overall.figures(),
            "by_segment": {k: {v: t.figures() for v, t in sorted(vals.items())}
                           for k, vals in by.items() if set(vals) - {UNKNOWN}},
            "timeseries": [{"start": b * bucket, "end": (b + 1) * bucket, **buckets[b].figures()}
                           for b in sorted(buckets)],
        }

    def clicks_after(self, position: int, limit: int = MAX_CLICKS) -> list[Click]:
        """The newest `limit` clicks logged after `position` (those still held), oldest first."""
        # list() copies the deque in one step: a background read may append to it meanwhile.
        out = [(u, ts, item) for pos, u, ts, item in list(self.clicks) if pos > position]
        return out[-limit:] if limit < len(out) else out
