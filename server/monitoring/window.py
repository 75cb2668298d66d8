"""A window's business figures kept as running totals, so a summary costs O(segments + buckets).

RunningMetrics (running.py) folds each logged event into its session's aggregate. A `WindowView`
holds, for one (window, bucket), the sum of the aggregates of the sessions that started in the
window (which ends at the newest event seen): overall, per segment value and per time bucket.
Sessions change after they start (a late event joins one, moves its start earlier, merges two
loose ones), so a session's share is taken back before it changes and added again after
(`retract` / `admit`), and as the newest event moves on, sessions whose start falls out of the
window are taken back (a heap by start). The totals are therefore always those a pass over the
held sessions gives (`RunningMetrics.summary_by_pass`, tests/server/monitoring/test_running.py
holds them equal), at a cost per event of a few dictionary updates per segment key.

Distinct users are counted with a multiset (user -> sessions in the window), so a user leaves a
segment's count when their last session there does.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

from .collector import SEGMENT_KEYS, UNKNOWN, Tally


class SessionAgg(Protocol):
    """What a window reads of a session's running aggregate (running.SessionAgg)."""

    user_id: str
    start: float
    shown: bool
    purchased: bool
    first: dict[str, tuple[float, int, str]]
    counts: dict[tuple, list]

    @property
    def bounced(self) -> bool: ...


@dataclass
class SignedTally(Tally):
    """A collector.Tally whose sessions and counts can also be taken back (sign -1)."""

    users: Counter = field(default_factory=Counter)  # type: ignore[assignment]  # len() is what figures() reads

    def add_session_flags(self, user_id: str, shown: bool, bounced: bool, converted: bool, sign: int = 1) -> None:
        self.sessions += sign
        held = self.users[user_id] + sign
        if held:
            self.users[user_id] = held
        else:
            del self.users[user_id]
        if shown:
            self.shown_sessions += sign
            self.bounces += sign * bounced
        self.converted_sessions += sign * converted

    def add_signed(self, c: list, sign: int) -> None:
        self.events += sign * c[0]
        self.impressions += sign * c[1]
        self.clicks += sign * c[2]
        self.purchases += sign * c[3]
        self.revenue += sign * c[4]

    def drained(self) -> bool:
        """True when nothing is left in it (and then its revenue is exactly 0, not a float residue)."""
        if self.sessions == 0 and self.events == 0:
            self.revenue = 0.0  # what float sums and differences left behind
            return True
        return False


class WindowView:
    def __init__(self, window: float, bucket: float):
        if bucket <= 0:
            raise ValueError("bucket must be positive")
        self.window, self.bucket = window, bucket
        self.since = -float("inf")
        self.overall = SignedTally()
        self.by: dict[str, dict[str, SignedTally]] = {k: {} for k in SEGMENT_KEYS}
        self.buckets: dict[int, SignedTally] = {}
        self._held: dict[int, int] = {}  # id(session) -> the sequence number of its live heap entry
        self._heap: list[tuple[float, int, SessionAgg]] = []
        self._seq = itertools.count()

    @property
    def size(self) -> int:
        """Sessions in the window."""
        return len(self._held)

    # --- membership ---

    def admit(self, a: SessionAgg) -> None:
        """Add a session's share if it started in the window (call after it changed)."""
        if a.start < self.since or id(a) in self._held:
            return
        seq = next(self._seq)
        self._held[id(a)] = seq
        heapq.heappush(self._heap, (a.start, seq, a))
        self._apply(a, 1)

    def retract(self, a: SessionAgg) -> None:
        """Take a session's share back if it is held (call before it changes, or when it is forgotten)."""
        if self._held.pop(id(a), None) is not None:
            self._apply(a, -1)

    def advance(self, newest: float) -> None:
        """The window now ends at `newest`: take back the sessions that started before its start."""
        self.since = newest - self.window
        heap = self._heap
        while heap and heap[0][0] < self.since:
            _, seq, a = heapq.heappop(heap)
            if self._held.get(id(a)) == seq:
                del self._held[id(a)]
                self._apply(a, -1)
        if len(heap) > 4 * len(self._held) + 1024:  # entries left behind by sessions that changed
            heap[:] = [entry for entry in heap if self._held.get(id(entry[2])) == entry[1]]
            heapq.heapify(heap)

    def add_counts(self, a: SessionAgg, own_ctx: tuple, c: list) -> None:
        """One more event in a held session that changed nothing else of it (running._reshapes)."""
        if id(a) not in self._held:
            return
        ctx = {k: v for k, (_, _, v) in a.first.items()}
        self.overall.add_signed(c, 1)
        self.buckets[int(a.start // self.bucket)].add_signed(c, 1)
        own = dict(own_ctx)
        for k in SEGMENT_KEYS:
            self._tally(k, own.get(k) or ctx.get(k, UNKNOWN)).add_signed(c, 1)

    # --- totals ---

    def _apply(self, a: SessionAgg, sign: int) -> None:
        ctx = {k: v for k, (_, _, v) in a.first.items()}
        b = int(a.start // self.bucket)
        in_bucket = self.buckets.get(b)
        if in_bucket is None:
            in_bucket = self.buckets[b] = SignedTally()
        seg = [self._tally(k, ctx.get(k, UNKNOWN)) for k in SEGMENT_KEYS]
        bounced = a.bounced
        for t in (self.overall, in_bucket, *seg):
            t.add_session_flags(a.user_id, a.shown, bounced, a.purchased, sign)
        touched = set()
        for own_ctx, c in a.counts.items():
            self.overall.add_signed(c, sign)
            in_bucket.add_signed(c, sign)
            own = dict(own_ctx)
            for k in SEGMENT_KEYS:
                value = own.get(k) or ctx.get(k, UNKNOWN)
                self._tally(k, value).add_signed(c, sign)
                touched.add((k, value))
        if sign < 0:  # drop what is empty now, as a pass over the sessions would never have made it
            if in_bucket.drained():
                del self.buckets[b]
            for k, value in touched | {(k, ctx.get(k, UNKNOWN)) for k in SEGMENT_KEYS}:
                held = self.by[k].get(value)
                if held is not None and held.drained():
                    del self.by[k][value]
            self.overall.drained()

    def _tally(self, key: str, value: str) -> SignedTally:
        t = self.by[key].get(value)
        if t is None:
            t = self.by[key][value] = SignedTally()
        return t

    def summary(self, until: float) -> dict:
        """The same dict as RunningMetrics.summary_by_pass: O(segment values + buckets)."""
        overall = self.overall.figures()
        return {
            "window": {"since": until - self.window, "until": until, "seconds": self.window,
                       "events": self.overall.events, "sessions": self.overall.sessions},
            "overall": overall,
            "by_segment": {k: {v: t.figures() for v, t in sorted(vals.items())}
                           for k, vals in self.by.items() if set(vals) - {UNKNOWN}},
            "timeseries": [{"start": b * self.bucket, "end": (b + 1) * self.bucket, **self.buckets[b].figures()}
                           for b in sorted(self.buckets)],
        }
