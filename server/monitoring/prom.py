"""The collector's figures as Prometheus metrics, on a private CollectorRegistry.

A custom collector renders a summary (from `collector.summarize`) at scrape time, so nothing is
held in the process-global registry and two apps in one process (as in the tests) never clash.
Every figure is a gauge over the summary's window, labelled `key`/`value` for per-segment series
(`key="all"` for the overall one): CTR, bounce rate, conversion and revenue per user are rates
over the window, not ever-increasing counters, so they are not Prometheus counters either.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
FIGURES = {
    "ctr": "Clicks per impression over the window",
    "bounce_rate": "Share of sessions that showed items and got no click, cart or purchase",
    "conversion": "Share of sessions with a purchase",
    "revenue_per_user": "Revenue over distinct users with a session",
    "impressions": "Impressions in the window",
    "clicks": "Clicks in the window",
    "sessions": "Sessions in the window",
    "users": "Distinct users in the window",
}


class SummaryCollector:
    def __init__(self, summary_fn: Callable[[], dict]):
        self.summary_fn = summary_fn

    def collect(self):
        summary = self.summary_fn()
        for name, doc in FIGURES.items():
            g = GaugeMetricFamily(f"pocketrank_{name}", doc, labels=["key", "value"])
            rows = [("all", "all", summary.get("overall", {}))]
            rows += [(k, v, f) for k, vals in summary.get("by_segment", {}).items() for v, f in vals.items()]
            for key, value, figs in rows:
                x = figs.get(name)
                if x is not None:
                    g.add_metric([key, value], float(x))
            yield g
        eps = GaugeMetricFamily("pocketrank_events_per_second", "Events received per second, last minute")
        eps.add_metric([], float(summary.get("events_per_second") or 0.0))
        yield eps
        info = GaugeMetricFamily("pocketrank_model_info", "1 for each served model version and its role",
                                 labels=["version", "role"])
        for role, version in (summary.get("models") or {}).items():
            if isinstance(version, str) and version:
                info.add_metric([version, role], 1.0)
        yield info
        canary = summary.get("canary") or {}
        share = GaugeMetricFamily("pocketrank_canary_share", "Share of users served the canary model")
        share.add_metric([], float(canary.get("share") or 0.0))
        yield share
        looks = GaugeMetricFamily("pocketrank_canary_looks", "Looks the canary rule has taken at the running rollout")
        looks.add_metric([], float(canary.get("looks") or 0))
        yield looks
        yield from _shadow(summary.get("shadow") or {})


def _shadow(sh: dict):
    """Shadow agreement and hit rates, labelled with the shadow's version (nothing when none is set)."""
    if not sh:
        return
    version = str(sh.get("version", ""))
    for name, key, doc in (("compared", "compared", "Requests the shadow model also ranked (this process)"),
                           ("dropped", "dropped", "Shadow comparisons dropped because the queue was full"),
                           ("overlap", "overlap", "Mean share of the served top k also in the shadow's top k"),
                           ("kendall_tau", "kendall_tau", "Mean Kendall tau-b of served and shadow scores "
                                                          "over the served list")):
        if sh.get(key) is not None:
            g = GaugeMetricFamily(f"pocketrank_shadow_{name}", doc, labels=["version"])
            g.add_metric([version], float(sh[key]))
            yield g
    hits = sh.get("hit_rate") or {}
    g = GaugeMetricFamily("pocketrank_shadow_hit_rate", "Share of later clicks in each model's list",
                          labels=["version", "model"])
    for model in ("served", "shadow"):
        if hits.get(model) is not None:
            g.add_metric([version, model], float(hits[model]))
    yield g


def registry_for(summary_fn: Callable[[], dict]) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(SummaryCollector(summary_fn))
    return reg


def render(summary: dict, *collectors: Any) -> bytes:
    """Prometheus text exposition of one summary, and of `collectors` (the service's metrics, the
    store's gauges: server/monitoring/service.py) on the same page."""
    reg = registry_for(lambda: summary)
    for c in collectors:
        reg.register(_Forward(c))
    return generate_latest(reg)


class _Forward:
    """A registry or collector rendered inside another registry (a registry is not registrable itself)."""

    def __init__(self, source: Any):
        self.source = source

    def collect(self):
        yield from self.source.collect()
