"""Segments: what a user with no events of their own starts from.

A segment is a set of profile attributes (age band, gender, occupation,
region). A new user who states some attributes gets, first, what the known
users sharing each attribute engaged with: each single-attribute segment's
products by their share of its engagements, the shares of the attributes named
summed (`popular_lists`, `lookup_popular`). On MovieLens-100k that prior beats
popularity (+5% nDCG@10 on cold users, 3 seeds) where the segment's mean user
vector did worse than it (-6%): a user vector says what comes next after a
history, not what a whole group engaged with. Homes whose features job predates
the lists keep the vector: the mean user vector of the segment's known users,
exact combination first, else the mean of the single-attribute vectors. With
none of those, popular items answer.
"""

from __future__ import annotations

import base64
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping

import numpy as np

from pocketrank.shared.errors import ValidationError

SEGMENT_FIELDS = ("age_band", "gender", "occupation", "region")
META_KEY = "segments"
POPULAR_KEY = "segment_popular"
LIST_LENGTH = 200  # products kept per segment: enough to survive the rules and a user's exclusions
# Like ids, plus "+" for bands such as "55+" (send it as %2B in a URL).
VALUE_RE = re.compile(r"^[A-Za-z0-9_.:+\-]{1,64}$")


def segment_key(attrs: Mapping[str, str]) -> str:
    return "&".join(f"{k}={attrs[k]}" for k in sorted(attrs))


def compute_segments(user_vectors: Mapping[str, np.ndarray], profiles: Mapping[str, Mapping[str, str]],
                     min_users: int = 5) -> dict[str, np.ndarray]:
    """Mean user vector per exact attribute combination and per single attribute,
    for segments with at least `min_users` users."""
    sums: dict[str, tuple[np.ndarray, int]] = {}
    for user_id, attrs in profiles.items():
        vec = user_vectors.get(user_id)
        if vec is None:
            continue
        attrs = {k: v for k, v in attrs.items() if k in SEGMENT_FIELDS}
        keys = {segment_key(attrs)} | {segment_key({k: v}) for k, v in attrs.items()}
        for key in keys:
            s, n = sums.get(key, (np.zeros_like(vec, dtype=np.float64), 0))
            sums[key] = (s + vec, n + 1)
    return {k: (s / n).astype(np.float32) for k, (s, n) in sums.items() if n >= min_users}


def lookup(segments: Mapping[str, np.ndarray], attrs: Mapping[str, str]) -> tuple[np.ndarray, str] | None:
    """The vector for these attributes and the segment(s) it came from, or None."""
    if not attrs or not segments:
        return None
    exact = segment_key(attrs)
    if exact in segments:
        return segments[exact], exact
    singles = [segment_key({k: v}) for k, v in sorted(attrs.items())]
    found = [s for s in singles if s in segments]
    if not found:
        return None
    return np.mean([segments[s] for s in found], axis=0).astype(np.float32), "|".join(found)


def parse_attrs(args: Mapping[str, str]) -> dict[str, str]:
    """Segment attributes from a request's query parameters, checked like ids."""
    out = {}
    for name in SEGMENT_FIELDS:
        value = args.get(name)
        if value is None or value == "":
            continue
        if not VALUE_RE.match(value):
            raise ValidationError(name, "must be 1-64 characters of A-Z a-z 0-9 _ . : + -")
        out[name] = value
    return out


def dumps(segments: Mapping[str, np.ndarray]) -> str:
    return json.dumps({k: base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode()
                       for k, v in sorted(segments.items())})


def loads(raw: str | None) -> dict[str, np.ndarray]:
    if not raw:
        return {}
    return {k: np.frombuffer(base64.b64decode(v), dtype="<f4").astype(np.float32) for k, v in json.loads(raw).items()}


def popular_lists(engaged: Mapping[str, Iterable[int]], profiles: Mapping[str, Mapping[str, str]],
                  min_users: int = 5, keep: int = LIST_LENGTH) -> dict[str, list[tuple[int, float]]]:
    """Per single-attribute segment with at least `min_users` users: its `keep` most engaged products and
    each one's share of the segment's engagements (a user counts once per product)."""
    counts: dict[str, Counter[int]] = {}
    users: Counter[str] = Counter()
    for user_id, attrs in profiles.items():
        items = set(engaged.get(user_id, ()))
        if not items:
            continue
        for k, v in attrs.items():
            if k not in SEGMENT_FIELDS:
                continue
            key = segment_key({k: v})
            counts.setdefault(key, Counter()).update(items)
            users[key] += 1
    out = {}
    for key, c in counts.items():
        if users[key] < min_users:
            continue
        total = sum(c.values())
        out[key] = [(int(i), n / total) for i, n in sorted(c.items(), key=lambda t: (-t[1], t[0]))[:keep]]
    return out


def lookup_popular(lists: Mapping[str, list[tuple[int, float]]], attrs: Mapping[str, str]
                   ) -> tuple[list[tuple[int, float]], str] | None:
    """(products ranked by their summed shares over the named attributes' segments, the segments), or None."""
    found = [key for key in (segment_key({k: v}) for k, v in sorted(attrs.items())) if key in lists]
    if not found:
        return None
    score: dict[int, float] = {}
    for key in found:
        for item, share in lists[key]:
            score[item] = score.get(item, 0.0) + share
    return sorted(score.items(), key=lambda t: (-t[1], t[0])), "|".join(found)


def dumps_popular(lists: Mapping[str, list[tuple[int, float]]]) -> str:
    return json.dumps({k: [[i, s] for i, s in v] for k, v in sorted(lists.items())})


def loads_popular(raw: str | None) -> dict[str, list[tuple[int, float]]]:
    if not raw:
        return {}
    return {k: [(int(i), float(s)) for i, s in v] for k, v in json.loads(raw).items()}
