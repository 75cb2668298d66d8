"""The real-time updater: folds the event log into each user's embedding, in log order.

It claims the next unacknowledged events, loads their users' records, folds
each event with the user tower (pocketrank.shared.features.update_user_state, the same
function the device runs), appends it to the user's recent sequence, and
writes the records back while acknowledging the events, in one store
transaction. A record remembers the position of the last event folded into it,
so an event delivered again after a crash is skipped, never applied twice.

It runs inside the server by default (POCKETRANK_UPDATER=embedded: the POST
that logged events folds them before it answers) and as its own process at
scale (`pocketrank updater`, with POCKETRANK_UPDATER=external on the workers).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ..stores.base import Store, Updates
from .catalogue import Catalogue
from .fold import fold_entries

log = logging.getLogger(__name__)


class _Request:
    """One ingest call waiting in the group-commit queue."""

    __slots__ = ("events", "fold", "new", "error", "done")

    def __init__(self, events: list, fold: bool):
        self.new: list[bool] = []
        self.error: BaseException | None = None
        self.events, self.fold, self.done = events, fold, False


class Updater:
    def __init__(self, store: Store, catalogue: Callable[[], Catalogue], batch: int = 2000, keep_recent: int = 50):
        self.store = store
        self.catalogue = catalogue
        self.batch = batch
        self.keep_recent = keep_recent
        self.applied = 0
        self._lock = threading.Lock()  # threads of one process queue here, not at the store's lock
        self._queue: list[_Request] = []  # ingest requests waiting for a commit
        self._queue_guard = threading.Lock()

    def step(self, lock_timeout: float = 30.0) -> int:
        """Fold the next batch of events; returns how many were claimed (0: caught up)."""
        with self._lock, self.store.updater_lock(lock_timeout):
            return self._step()

    def drain(self, max_seconds: float = 10.0, lock_timeout: float = 30.0) -> int:
        """Fold until caught up, holding the lock throughout (or until `max_seconds`
        passed, so a huge backlog cannot hold a request or the lock for long)."""
        with self._lock, self.store.updater_session(lock_timeout):
            return self._steps(max_seconds)

    def ingest(self, events: list, max_seconds: float = 10.0, lock_timeout: float = 5.0,
               fold: bool = True) -> list[bool]:
        """Log events, then fold everything pending before returning (the embedded mode;
        with fold=False only log them, for an updater process to fold: the external mode).

        On SQLite both happen in one transaction, so a request costs one commit, and
        requests of other threads that arrive meanwhile share it (group commit).
        The events are logged even if folding fails or another updater holds the
        lock too long: then the fold happens later, and the error is logged.
        """
        if not events:
            return []
        if not fold and not self.store.serial_writes:
            return self.store.append_events(events)  # Redis takes concurrent appends as they come
        mine = _Request(events, fold)
        with self._queue_guard:
            self._queue.append(mine)
        with self._lock:
            # Group commit: whoever holds the lock takes every request queued meanwhile (up to
            # `batch` events) into one transaction, one fold and one fsync. A request another
            # thread already committed is done by the time this thread gets the lock.
            while not mine.done:
                with self._queue_guard:
                    group: list[_Request] = []
                    size = 0
                    while self._queue and (not group or (size + len(self._queue[0].events) <= self.batch
                                                         and self._queue[0].fold == group[0].fold)):
                        group.append(self._queue.pop(0))
                        size += len(group[-1].events)
                self._ingest_group(group, max_seconds, lock_timeout)
        if mine.error is not None:
            raise mine.error
        return mine.new

    def _ingest_group(self, group: list[_Request], max_seconds: float, lock_timeout: float) -> None:
        try:
            with self.store.ingest_tx():
                # One append for the whole group: a repeat across two requests is a duplicate too.
                new = self.store.append_events([e for r in group for e in r.events])
                if any(new) and group[0].fold:
                    try:
                        with self.store.savepoint(), self.store.updater_session(lock_timeout):
                            self._steps(max_seconds)
                    except Exception as exc:  # noqa: BLE001  the events are durable; folding can wait
                        log.warning("events logged but not folded yet: %s: %s", type(exc).__name__, exc)
        except BaseException as exc:  # nothing of the group was committed: each request fails alike
            for r in group:
                r.error, r.done = exc, True
            return
        at = 0
        for r in group:
            r.new, r.done = new[at:at + len(r.events)], True
            at += len(r.events)

    def _steps(self, max_seconds: float) -> int:
        total, deadline = 0, time.monotonic() + max_seconds
        while time.monotonic() < deadline:
            with self.store.updater_step():
                n = self._step()
            total += n
            if n == 0 or (n < self.batch and not self.store.partial_claims):
                break
        return total

    def _step(self, block: float = 0.0) -> int:
        entries = self.store.claim_events(self.batch, block)
        if not entries:
            return 0
        cat = self.catalogue()
        records = self.store.user_records({e.event.user_id for e in entries}, cat.dim)
        updates = Updates()
        fold_entries(entries, records, updates, cat.vector_map(), cat.title_index(), cat.dim, self.keep_recent)
        self.store.commit_updates(updates, entries)
        self.applied += len(entries)
        return len(entries)

    def run(self, stop: threading.Event, idle_wait: float = 1.0) -> None:
        """Fold continuously until `stop` is set; between bursts wait for new events."""
        while not stop.is_set():
            try:
                if self.store.claim_blocks:
                    self._consume(stop, idle_wait)
                elif self.drain() == 0:
                    self.store.wait_for_events(idle_wait)
            except Exception:  # a store hiccup must not end the loop; it resumes from its position
                log.exception("updater step failed; retrying in 1 s")
                stop.wait(1.0)

    def _consume(self, stop: threading.Event, idle_wait: float) -> None:
        # A consumer-group claim waits for new entries itself, so one call both
        # sleeps and wakes on the next event. The lock is let go every 2 s, well
        # inside its expiry, so a second updater can take over if this one dies
        # (on a partitioned log, each process holds a share of the partitions).
        with self._lock, self.store.consumer_session():
            until = time.monotonic() + 2.0
            while not stop.is_set() and time.monotonic() < until:
                with self.store.updater_step():
                    self._step(block=min(idle_wait, 0.5))
