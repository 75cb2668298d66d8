"""The service's own metrics: requests, latencies, errors, sync answer sizes, ingest and updater lag.

Counted in each worker as requests are answered (server/api/observe.py) and summed over every
gunicorn worker at scrape time by prometheus_client's multiprocess mode: when PROMETHEUS_MULTIPROC_DIR
is set (server/gunicorn_conf.py sets it for the workers: a fresh directory, emptied at start), each
worker writes its values to files there and `/metrics` reads them all, whichever worker answers; a
dead worker's live gauge is dropped by gunicorn's `child_exit` hook (`mark_dead`), its counts stay.
Without the variable (Flask's server, the tests) each app counts on a registry of its own, so two
apps in one process never add up.

Series are labelled by the route's rule (`/v1/artifacts/<int:version>/<name>`, never the raw path),
the method and the status, so their number is bounded by the routes, whatever clients ask for.

The figures read from the store (events the updater has not folded, the bundle version) are
gauges computed at scrape time by the answering worker (`StoreGauges`): the store is shared, so any
worker gives the same answer.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
UNMATCHED = "<unmatched>"  # the route label of a request no rule matched (a 404)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BYTES_BUCKETS = tuple(float(1 << n) for n in range(8, 26, 2))  # 256 B .. 16 MiB
# Events reach the server seconds after they happen, or days later from a phone that was offline.
LAG_BUCKETS = (1.0, 5.0, 30.0, 60.0, 300.0, 1_800.0, 3_600.0, 6 * 3_600.0, 86_400.0, 7 * 86_400.0, 30 * 86_400.0)


def multiprocess() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def mark_dead(pid: int) -> None:
    """gunicorn's child_exit: drop a dead worker's live gauges (its counters and histograms stay summed)."""
    if multiprocess():
        from prometheus_client import multiprocess as mp

        mp.mark_process_dead(pid)


class ServiceMetrics:
    """One app's request metrics (one per worker process under gunicorn)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("pocketrank_http_requests", "Requests answered, by route rule, method and status",
                                ["route", "method", "status"], registry=r)
        self.latency = Histogram("pocketrank_http_request_duration_seconds",
                                 "Time from the request's first hook to its answer, by route rule, method and status",
                                 ["route", "method", "status"], buckets=LATENCY_BUCKETS, registry=r)
        self.exceptions = Counter("pocketrank_http_exceptions",
                                  "Unhandled exceptions (answered 500), by route rule and exception type",
                                  ["route", "type"], registry=r)
        self.sync_bytes = Histogram("pocketrank_sync_answer_bytes", "Body size of GET /v1/sync answers, by status",
                                    ["status"], buckets=BYTES_BUCKETS, registry=r)
        self.ingest_lag = Histogram("pocketrank_ingest_lag_seconds",
                                    "How old an accepted event was when it reached the server "
                                    "(arrival time minus the event's own timestamp)",
                                    buckets=LAG_BUCKETS, registry=r)
        self.workers = Gauge("pocketrank_workers", "Worker processes serving (gunicorn: live ones, summed)",
                             multiprocess_mode="livesum", registry=r)
        self.workers.set(1)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        labels = (route, method, str(status))
        self.requests.labels(*labels).inc()
        self.latency.labels(*labels).observe(seconds)

    def observe_lags(self, timestamps: Iterable[float], now: float | None = None) -> None:
        now = time.time() if now is None else now
        for ts in timestamps:
            self.ingest_lag.observe(max(0.0, now - ts))

    def collectors(self) -> list[Any]:
        """What /metrics renders of these: every worker's files in multiprocess mode, else this registry."""
        if multiprocess():
            return [MultiProcessCollector(None)]
        return [self.registry]


class StoreGauges:
    """Figures read at scrape time: the updater's backlog, the bundle version, readiness; one store query each."""

    def __init__(self, read: Callable[[], dict[str, float]]):
        self.read = read

    def collect(self):
        figures = self.read()
        for name, doc in (("updater_pending_events", "Events logged but not yet folded into user vectors "
                                                     "(the updater's lag, in events)"),
                          ("newest_event_age_seconds", "Now minus the newest logged event's timestamp"),
                          ("bundle_version", "The newest published bundle version"),
                          ("ready", "1 when /readyz answers 200"),
                          ("business_figures_complete", "1 once this worker's first read of the event log has "
                                                        "reached its end; until then the window's figures "
                                                        "(CTR, revenue, ...) are left out"),
                          ("business_figures_behind_seconds", "How long this worker's window figures have been "
                                                              "behind the log (0 when current: a burst is being "
                                                              "read in the background)")):
            if figures.get(name) is not None:
                g = GaugeMetricFamily(f"pocketrank_{name}", doc)
                g.add_metric([], float(figures[name]))
                yield g
