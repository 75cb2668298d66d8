"""Shadow mode: a candidate scores a sample of requests beside the served model, and is never served.

The sample is of users, by the canary's stable hash (salted with the shadow's version and start):
every personal request of a sampled user is compared, so each of their clicks can be attributed
to the list they were actually shown last. For such a request (the personal path: a cold user's
popular list says nothing about either model), the shadow ranks the same user with the same rules
on a background thread, after the answer is on its way: the request pays for a hash and a queue
put, no more. The queue is bounded (`MAX_PENDING`); when it is full the comparison is
dropped and counted, so a slow shadow never backs up the server.

What is accumulated (per process; every worker reports its own sample):

- agreement: top-k overlap (share of the served top k that is also in the shadow's top k) and
  Kendall's tau-b between the served scores and the shadow's scores of the same served items
  (pocketrank.exporter.agreement.kendall_tau), averaged over compared requests;
- offline hit rate per model: of the user's clicks logged after a compared request (and before
  their next compared one), the share that fall in the served list and in the shadow's list.
  Clicks come from what was shown, so the served model's hit rate is inflated by exposure (the
  user could only click what they saw); the shadow's is a lower bound. A shadow that matches or
  beats the served model on it anyway is strong evidence, one that trails it is not, by itself,
  evidence against.

    log = ShadowLog()
    log.add(compare("u1", t, [3, 1, 2], [0.9, 0.5, 0.4], [1, 3, 7], [0.7, 0.8, 0.1]))
    report(log, clicks_of(events_after_the_shadow_started))
"""

from __future__ import annotations

import logging
import threading
from bisect import bisect_right
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import cast

import numpy as np

from pocketrank.exporter.agreement import kendall_tau
from pocketrank.shared.schemas import Event

from .canary import bucket

log = logging.getLogger(__name__)

MAX_PENDING = 64  # comparisons waiting for the shadow thread before new ones are dropped
MAX_KEPT = 50_000  # compared requests kept for the hit rate (the oldest are forgotten)


@dataclass(frozen=True)
class Comparison:
    user_id: str
    at: float  # server clock, seconds
    served: tuple[int, ...]
    shadow: tuple[int, ...]
    overlap: float
    tau: float


def compare(user_id: str, at: float, served: list[int], served_scores: list[float], shadow: list[int],
            shadow_scores_of_served: list[float] | np.ndarray) -> Comparison:
    """Agreement of one request: top-k overlap, and tau over the served list's items."""
    k = len(served)
    overlap = len(set(served) & set(shadow[:k])) / k if k else 1.0
    tau = kendall_tau(np.asarray(served_scores, dtype=np.float64), np.asarray(shadow_scores_of_served,
                                                                              dtype=np.float64))
    return Comparison(user_id, at, tuple(served), tuple(shadow), overlap, tau)


Click = tuple[str, float, int]  # user id, timestamp, item index (what a logged click event carries)


def clicks_of(events: Iterable[Event]) -> list[Click]:
    # logged events carry the item's index
    return [(e.user_id, e.timestamp, cast(int, e.item_id)) for e in events if e.type == "click" and e.item_id is not None]


def hit_rates(comparisons: Iterable[Comparison], events: Iterable[Event]) -> dict:
    """Share of later clicks in the served list and in the shadow's list (see the module docstring)."""
    return click_hit_rates(comparisons, clicks_of(events))


def click_hit_rates(comparisons: Iterable[Comparison], clicks: Iterable[Click]) -> dict:
    """hit_rates of clicks already picked out (server/monitoring/running.py keeps them so)."""
    by_user: dict[str, list[Comparison]] = defaultdict(list)
    for c in comparisons:
        by_user[c.user_id].append(c)
    by_user_clicks: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for user, ts, item in clicks:
        if user in by_user:
            by_user_clicks[user].append((ts, item))
    n = served_hits = shadow_hits = 0
    for user, comps in by_user.items():
        comps.sort(key=lambda c: c.at)
        times = [c.at for c in comps]
        for ts, item in by_user_clicks.get(user, ()):
            i = bisect_right(times, ts) - 1  # the latest compared request before this click
            if i < 0:
                continue
            n += 1
            served_hits += item in comps[i].served
            shadow_hits += item in comps[i].shadow
    return {"clicks": n, "served": served_hits / n if n else None, "shadow": shadow_hits / n if n else None}


class ShadowLog:
    """Running agreement figures and the recent comparisons, for one shadow version (thread-safe)."""

    def __init__(self, key: tuple = ()):
        self.key = key  # (version, started_at): a new shadow starts a new log
        self._lock = threading.Lock()
        self.compared = 0
        self.dropped = 0
        self.failed = 0
        self._overlap = 0.0
        self._tau = 0.0
        self.recent: deque[Comparison] = deque(maxlen=MAX_KEPT)

    def add(self, c: Comparison) -> None:
        with self._lock:
            self.compared += 1
            self._overlap += c.overlap
            self._tau += c.tau
            self.recent.append(c)

    def figures(self) -> dict:
        with self._lock:
            n = self.compared
            return {"compared": n, "dropped": self.dropped, "failed": self.failed,
                    "overlap": self._overlap / n if n else None, "kendall_tau": self._tau / n if n else None}

    def comparisons(self) -> list[Comparison]:
        with self._lock:
            return list(self.recent)


def report(shadow_log: ShadowLog, clicks: Iterable[Click]) -> dict:
    return {**shadow_log.figures(), "hit_rate": click_hit_rates(shadow_log.comparisons(), clicks)}


class ShadowRunner:
    """Runs comparisons on one background thread, a bounded number waiting; drops the rest."""

    def __init__(self, max_pending: int = MAX_PENDING):
        self.max_pending = max_pending
        self.log = ShadowLog()
        self._pending = 0
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pool: ThreadPoolExecutor | None = None

    def log_for(self, key: tuple) -> ShadowLog:
        if self.log.key != key:
            with self._lock:
                if self.log.key != key:
                    self.log = ShadowLog(key)
        return self.log

    @staticmethod
    def sampled(user_id: str, salt: str, share: float) -> bool:
        """Is this user in the shadow's sample (stable for the shadow's life, like a canary arm)?"""
        return share >= 1 or bucket(user_id, salt) < share

    def submit(self, target: ShadowLog, job: Callable[[], Comparison | None]) -> bool:
        with self._lock:
            if self._pending >= self.max_pending:
                target.dropped += 1
                return False
            self._pending += 1
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pocketrank-shadow")
        self._pool.submit(self._run, target, job)
        return True

    def _run(self, target: ShadowLog, job: Callable[[], Comparison | None]) -> None:
        try:
            c = job()
            if c is not None:
                target.add(c)
        except Exception:  # noqa: BLE001 - a failing shadow must never reach the served path
            target.failed += 1
            log.exception("shadow comparison failed")
        finally:
            with self._lock:
                self._pending -= 1
                if self._pending == 0:
                    self._idle.notify_all()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every submitted comparison is done (tests, and before a report in one process)."""
        with self._lock:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
