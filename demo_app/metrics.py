"""What the operator page charts, computed from this demo session's own log.

Pure functions over the lists shown, the events tracked, the uploads, syncs and
one-second samples the device app recorded; nothing here is invented. Time is
cut into equal buckets from the session start to now; each series has one
value per bucket end (None where there is nothing to measure yet).

Definitions, as the page states them:
- CTR: clicks on items of the lists shown / items shown (impressions), cumulative.
- Bounce rate: lists the user left (another list replaced them) without a view,
  click, cart or purchase on any of their items / lists left, cumulative.
- Revenue: sum of the synthetic prices of purchased items, cumulative.
A segment is the list's source (server, on-device rerank, ...) or its user.
"""

from __future__ import annotations

import math
from typing import Any

ENGAGING = ("view", "click", "add_to_cart", "purchase")


def bucket_edges(t0: float, now: float, n: int = 30, min_width: float = 1.0) -> list[float]:
    """Ends of equal buckets covering [t0, now]; at most n, none narrower than min_width seconds."""
    span = max(now - t0, min_width)
    count = max(1, min(n, int(math.ceil(span / min_width))))
    width = span / count
    return [t0 + width * (i + 1) for i in range(count)]


def _segment_of(lists: list[dict], by: str) -> dict[Any, str]:  # list id -> segment; get(None) is a miss
    return {lst["list_id"]: str(lst["source"] if by == "source" else lst["user_id"]) for lst in lists}


def ctr(lists: list[dict], events: list[dict], edges: list[float], by: str = "source") -> dict[str, list]:
    seg = _segment_of(lists, by)
    out: dict[str, list] = {}
    for name in sorted(set(seg.values())):
        values = []
        for e in edges:
            shown = sum(len(lst["item_ids"]) for lst in lists if seg[lst["list_id"]] == name and lst["t"] <= e)
            clicks = sum(1 for ev in events if ev["type"] == "click" and ev.get("list_id") in seg
                         and seg[ev["list_id"]] == name and ev["t"] <= e)
            values.append(clicks / shown if shown else None)
        out[name] = values
    return out


def bounce(lists: list[dict], events: list[dict], edges: list[float], by: str = "source") -> dict[str, list]:
    seg = _segment_of(lists, by)
    ordered = sorted(lists, key=lambda lst: (lst["t"], lst["list_id"]))
    # A list is left when the next one replaces it on the screen.
    left = [(lst, nxt["t"]) for lst, nxt in zip(ordered, ordered[1:])]
    engaged: dict[Any, float] = {}
    for ev in events:
        if ev["type"] in ENGAGING and ev.get("list_id") is not None:
            engaged[ev["list_id"]] = min(engaged.get(ev["list_id"], math.inf), ev["t"])
    out: dict[str, list] = {}
    for name in sorted(set(seg.values())):
        values = []
        for e in edges:
            done = [(lst, t_left) for lst, t_left in left if seg[lst["list_id"]] == name and t_left <= e]
            bounced = sum(1 for lst, t_left in done if engaged.get(lst["list_id"], math.inf) > t_left)
            values.append(bounced / len(done) if done else None)
        out[name] = values
    return out


def revenue(lists: list[dict], events: list[dict], edges: list[float], by: str = "source") -> dict[str, list]:
    seg = _segment_of(lists, by)
    buys = [ev for ev in events if ev["type"] == "purchase"]
    names = sorted(set(seg.values()) | {seg.get(ev.get("list_id"), "other") for ev in buys})
    return {name: [round(sum(ev["price"] for ev in buys if seg.get(ev.get("list_id"), "other") == name
                             and ev["t"] <= e), 2) for e in edges] for name in names}


def per_second(times: list[float], edges: list[float], t0: float, weights: list[float] | None = None) -> list[float]:
    """Sum of weights (default 1 each) falling in each bucket, divided by the bucket's width."""
    weights = weights if weights is not None else [1.0] * len(times)
    out, start = [], t0
    for i, e in enumerate(edges):
        # buckets are (start, e]; the first one also holds an event at exactly t0
        total = sum(w for t, w in zip(times, weights) if start < t <= e or (i == 0 and t == start))
        out.append(round(total / max(e - start, 1e-9), 3))
        start = e
    return out


def last_sample(samples: list[dict], edges: list[float], key: str) -> list:
    """The value of `key` in the latest sample at or before each bucket end."""
    out, i, value = [], 0, None
    ordered = sorted(samples, key=lambda s: s["t"])
    for e in edges:
        while i < len(ordered) and ordered[i]["t"] <= e:
            value = ordered[i].get(key)
            i += 1
        out.append(value)
    return out


def deltas(samples: list[dict], edges: list[float], key: str) -> list[int]:
    """Growth of a counter (e.g. bytes through the link) within each bucket."""
    ends = last_sample(samples, edges, key)
    out, prev = [], 0
    for v in ends:
        v = v if v is not None else prev
        out.append(max(0, v - prev))
        prev = v
    return out


def compute(log: dict, now: float, buckets: int = 30) -> dict:
    """The operator page's whole payload from a Device.snapshot()."""
    t0 = log["started_at"]
    edges = bucket_edges(t0, now, buckets)
    lists, events, samples = log["lists"], log["events"], log["samples"]
    flushes = [f for f in log["flushes"] if f["sent"]]
    return {
        "t0": t0,
        "now": now,
        "edges": [round(e - t0, 2) for e in edges],
        "ctr": {by: ctr(lists, events, edges, by) for by in ("source", "user")},
        "bounce": {by: bounce(lists, events, edges, by) for by in ("source", "user")},
        "revenue": {by: revenue(lists, events, edges, by) for by in ("source", "user")},
        "events_per_s": {
            "tracked on device": per_second([ev["t"] for ev in events], edges, t0),
            "acknowledged by server": per_second([f["t"] for f in flushes], edges, t0,
                                                 [float(f["acknowledged"]) for f in flushes]),
        },
        "outbox": last_sample(samples, edges, "outbox"),
        "traffic_bytes": {"device to server": deltas(samples, edges, "bytes_up"),
                          "server to device": deltas(samples, edges, "bytes_down")},
        "latency": [{"t": round(lst["t"] - t0, 2), "ms": lst["latency_ms"], "source": lst["source"]} for lst in lists],
        "syncs": [{"t": round(s["t"] - t0, 2), "bytes": s["bytes"], "changed": s["changed"],
                   "version": s["version"], "ms": round(s["ms"], 1), "error": s["error"]} for s in log["syncs"]],
        "totals": {
            "impressions": sum(1 for ev in events if ev["type"] == "impression"),
            "clicks": sum(1 for ev in events if ev["type"] == "click"),
            "purchases": sum(1 for ev in events if ev["type"] == "purchase"),
            "revenue": round(sum(ev["price"] for ev in events if ev["type"] == "purchase"), 2),
            "events": len(events),
            "lists": len(lists),
            "uploaded": sum(f["acknowledged"] for f in flushes),
        },
    }
