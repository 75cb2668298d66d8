"""CTR, bounce rate, conversion and revenue per user, overall, per segment and per time bucket.

Pure functions over an iterable of `pocketrank.shared.schemas.Event` (plus a price map and, optionally,
a user -> segment map), so the server, the A/B bench and the tests compute one thing one way.

Definitions (a session is the events sharing a `session_id`; events without one are grouped
per user and device, a new session starting after 30 minutes of silence):

- CTR = clicks / impressions.
- Bounce rate = bounced sessions / sessions that showed something, where a session showed
  something if it has an impression or a view, and bounced if it also has no click, add-to-cart
  or purchase: it ended after one look with no click. On simulated sessions this is exactly
  `lab.simulator.is_bounce`.
- Conversion = sessions with a purchase / sessions.
- Revenue per user = the price of every purchase / distinct users with a session.

Segments: every context key of the events (source, model_version, candidates_version, platform,
connectivity, segment) plus the user segment from `user_segments`. An event counts under its own
context value; an event without one inherits the first value its session carries, so a click
lands in the segment of the list it came from. A session counts under the first value it carries.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import cast

from pocketrank.shared.schemas import CONTEXT_KEYS, Event

SESSION_GAP_S = 1800.0
SHOWN = ("impression", "view")
ENGAGED = ("click", "add_to_cart", "purchase")
UNKNOWN = "unknown"
# The keys figures are broken down by: the event context keys and the user segment map's.
SEGMENT_KEYS = tuple(k for k in CONTEXT_KEYS if k != "segment") + ("segment",)


@dataclass
class Session:
    key: str
    user_id: str
    start: float
    events: list[Event] = field(default_factory=list)

    @property
    def shown(self) -> bool:
        return any(e.type in SHOWN for e in self.events)

    @property
    def bounced(self) -> bool:
        return self.shown and not any(e.type in ENGAGED for e in self.events)

    def context(self, user_segments: Mapping[str, str] | None = None) -> dict[str, str]:
        """The first value of each context key in the session (and the user's segment)."""
        out: dict[str, str] = {}
        for e in self.events:
            for k, v in e.context:
                out.setdefault(k, v)
        if user_segments and self.user_id in user_segments:
            out.setdefault("segment", user_segments[self.user_id])
        return out


def sessionize(events: Iterable[Event], gap: float = SESSION_GAP_S) -> list[Session]:
    """Group events into sessions, ordered by start; events within a session by timestamp."""
    by_id: dict[str, Session] = {}
    loose: dict[tuple[str, str], list[Event]] = defaultdict(list)
    for e in events:
        if e.session_id:
            s = by_id.get(e.session_id)
            if s is None:
                s = by_id[e.session_id] = Session(e.session_id, e.user_id, e.timestamp)
            s.events.append(e)
        else:
            loose[(e.user_id, e.device_id)].append(e)
    out = list(by_id.values())
    for (user, device), evs in loose.items():
        evs.sort(key=lambda e: e.timestamp)
        cur: Session | None = None
        for e in evs:
            if cur is None or e.timestamp - cur.events[-1].timestamp > gap:
                cur = Session(f"{user}/{device}/{e.timestamp:.3f}", user, e.timestamp)
                out.append(cur)
            cur.events.append(e)
    for s in out:
        s.events.sort(key=lambda e: e.timestamp)
        s.start = s.events[0].timestamp
    out.sort(key=lambda s: (s.start, s.key))
    return out


@dataclass
class Tally:
    """Additive counts; the rates are derived, so tallies of parts sum to the tally of the whole."""

    impressions: int = 0
    clicks: int = 0
    sessions: int = 0
    shown_sessions: int = 0
    bounces: int = 0
    converted_sessions: int = 0
    purchases: int = 0
    revenue: float = 0.0
    events: int = 0
    users: set = field(default_factory=set)

    def add_event(self, e: Event, prices: Mapping[int, float]) -> None:
        revenue = float(prices.get(cast(int, e.item_id), 0.0)) if e.type == "purchase" else 0.0  # logged: the index
        self.add_counts(1, e.type == "impression", e.type == "click", e.type == "purchase", revenue)

    def add_counts(self, events: int, impressions: int, clicks: int, purchases: int, revenue: float) -> None:
        """Events counted elsewhere (a running session aggregate, server/monitoring/running.py)."""
        self.events += events
        self.impressions += impressions
        self.clicks += clicks
        self.purchases += purchases
        self.revenue += revenue

    def add_session(self, s: Session) -> None:
        self.add_session_flags(s.user_id, s.shown, s.bounced, any(e.type == "purchase" for e in s.events))

    def add_session_flags(self, user_id: str, shown: bool, bounced: bool, converted: bool) -> None:
        self.sessions += 1
        self.users.add(user_id)
        if shown:
            self.shown_sessions += 1
            self.bounces += bounced
        self.converted_sessions += converted

    def figures(self) -> dict:
        n_users = len(self.users)
        return {
            "impressions": self.impressions, "clicks": self.clicks, "sessions": self.sessions,
            "bounces": self.bounces, "purchases": self.purchases, "users": n_users, "events": self.events,
            "revenue": round(self.revenue, 2),
            "ctr": self.clicks / self.impressions if self.impressions else None,
            "bounce_rate": self.bounces / self.shown_sessions if self.shown_sessions else None,
            "conversion": self.converted_sessions / self.sessions if self.sessions else None,
            "revenue_per_user": self.revenue / n_users if n_users else None,
        }


def _tallies(sessions: list[Session], prices: Mapping[int, float], user_segments: Mapping[str, str] | None,
             keys: tuple[str, ...]) -> tuple[Tally, dict[str, dict[str, Tally]]]:
    overall = Tally()
    by: dict[str, dict[str, Tally]] = {k: defaultdict(Tally) for k in keys}
    for s in sessions:
        ctx = s.context(user_segments)
        overall.add_session(s)
        for k in keys:
            by[k][ctx.get(k, UNKNOWN)].add_session(s)
        for e in s.events:
            overall.add_event(e, prices)
            own = dict(e.context)
            for k in keys:
                by[k][own.get(k) or ctx.get(k, UNKNOWN)].add_event(e, prices)
    return overall, by


def summarize(events: Iterable[Event], prices: Mapping[int, float] | None = None,
              user_segments: Mapping[str, str] | None = None, keys: tuple[str, ...] = SEGMENT_KEYS) -> dict:
    """{"overall": figures, "by_segment": {key: {value: figures}}}. Keys with only `unknown` are left out."""
    overall, by = _tallies(sessionize(events), prices or {}, user_segments, keys)
    return {"overall": overall.figures(),
            "by_segment": {k: {v: t.figures() for v, t in sorted(vals.items())}
                           for k, vals in by.items() if set(vals) - {UNKNOWN}}}


def timeseries(events: Iterable[Event], bucket_seconds: float, prices: Mapping[int, float] | None = None) -> list[dict]:
    """Rolling windows: the overall figures per time bucket, a session in the bucket it started in."""
    if bucket_seconds <= 0:
        raise ValueError("bucket_seconds must be positive")
    buckets: dict[int, list[Session]] = defaultdict(list)
    for s in sessionize(events):
        buckets[int(s.start // bucket_seconds)].append(s)
    out = []
    for b in sorted(buckets):
        overall, _ = _tallies(buckets[b], prices or {}, None, ())
        out.append({"start": b * bucket_seconds, "end": (b + 1) * bucket_seconds, **overall.figures()})
    return out


@dataclass
class UnitStats:
    """Per-unit (user) totals: what the canary rule and the bootstrap resample."""

    clicks: int = 0
    impressions: int = 0
    shown_sessions: int = 0
    bounces: int = 0
    revenue: float = 0.0


def per_user(events: Iterable[Event], prices: Mapping[int, float] | None = None) -> dict[str, UnitStats]:
    out: dict[str, UnitStats] = defaultdict(UnitStats)
    prices = prices or {}
    for s in sessionize(events):
        u = out[s.user_id]
        u.shown_sessions += s.shown
        u.bounces += s.bounced
        for e in s.events:
            u.impressions += e.type == "impression"
            u.clicks += e.type == "click"
            if e.type == "purchase":
                u.revenue += float(prices.get(cast(int, e.item_id), 0.0))  # logged events carry the index
    return dict(out)
