"""Canary releases: which users see the new model, and when to promote or roll back.

Assignment: a user is in the canary when sha256("<rollout_id>:<user_id>") read as a number in
[0, 1) is below the share. The same user always lands in the same arm for a rollout (on the server
and on every device, which computes the same hash from the manifest's rollout id), a new rollout
id reshuffles, and widening the share only adds users: whoever was in at 5% stays in at 25%.

The rule, stated: arms are compared on CTR (clicks / impressions) and bounce rate (bounced /
shown sessions). Both are ratios of per-user sums, and a user's impressions are not independent
of each other, so the standard error comes from the delta method over users (the unit that was
randomised), not from a binomial over impressions, which would be overconfident. At each look:

- rollback if the canary is worse on either metric with z beyond `z_crit`: CTR lower (z <= -z_crit)
  or bounce higher (z >= z_crit);
- promote if both arms have at least `min_users` users and `min_impressions` impressions and the
  canary is shown non-inferior on both: its CTR above (1 - margin) x control and its bounce rate
  below (1 + margin) x control, each one-sided at z_crit;
- otherwise continue; at `max_looks` without a decision, roll back (not shown safe).

z_crit is sequential-safe by Bonferroni: alpha (0.05) is split over both metrics, both directions
and `max_looks` looks, so the chance of any false alarm over the whole rollout stays below alpha
however often it is checked (default: 0.05 / (2 * 2 * 20) one-sided, z = 3.23). That is
conservative against an alpha-spending boundary, and simple to audit.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

import numpy as np

from ..monitoring.collector import UnitStats


def bucket(user_id: str, rollout_id: str) -> float:
    """The user's position in [0, 1) for this rollout: stable, uniform, independent across rollouts."""
    digest = hashlib.sha256(f"{rollout_id}:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def in_canary(user_id: str, rollout_id: str, share: float) -> bool:
    return bucket(user_id, rollout_id) < share


def _norm_ppf(p: float) -> float:
    """Inverse standard normal CDF (bisection on erfc; exact enough for a threshold)."""
    lo, hi = -10.0, 10.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if 0.5 * math.erfc(-mid / math.sqrt(2)) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


@dataclass(frozen=True)
class Rule:
    alpha: float = 0.05
    max_looks: int = 20
    margin: float = 0.02  # non-inferiority margin, relative
    min_users: int = 50
    min_impressions: int = 2000

    @property
    def z_crit(self) -> float:
        return -_norm_ppf(self.alpha / (2 * 2 * self.max_looks))


@dataclass
class Ratio:
    value: float
    se: float
    users: int
    numerator: float
    denominator: float


def ratio(num: np.ndarray, den: np.ndarray) -> Ratio:
    """sum(num) / sum(den) over users, with its delta-method standard error."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    keep = den > 0
    num, den = num[keep], den[keep]
    n = int(num.size)
    if n == 0 or den.sum() == 0:
        return Ratio(float("nan"), float("inf"), n, 0.0, 0.0)
    r = num.sum() / den.sum()
    if n < 2:
        return Ratio(float(r), float("inf"), n, float(num.sum()), float(den.sum()))
    resid = num - r * den
    se = math.sqrt(resid.var(ddof=1) / n) / den.mean()
    return Ratio(float(r), float(se), n, float(num.sum()), float(den.sum()))


@dataclass
class ArmStats:
    ctr: Ratio
    bounce: Ratio

    @classmethod
    def from_units(cls, units: Iterable[UnitStats]) -> ArmStats:
        us = list(units)
        return cls(ratio(np.array([u.clicks for u in us]), np.array([u.impressions for u in us])),
                   ratio(np.array([u.bounces for u in us]), np.array([u.shown_sessions for u in us])))


def split_units(units: Mapping[str, UnitStats], rollout_id: str, share: float) -> tuple[ArmStats, ArmStats]:
    """(control, canary) from per-user stats, by the same hash that assigned them."""
    canary = [u for uid, u in units.items() if in_canary(uid, rollout_id, share)]
    control = [u for uid, u in units.items() if not in_canary(uid, rollout_id, share)]
    return ArmStats.from_units(control), ArmStats.from_units(canary)


@dataclass
class Decision:
    action: str  # promote | rollback | continue
    reason: str
    look: int
    z_crit: float
    ctr_control: float
    ctr_canary: float
    z_ctr: float
    bounce_control: float
    bounce_canary: float
    z_bounce: float
    users_control: int
    users_canary: int
    impressions_canary: int

    def to_dict(self) -> dict:
        return asdict(self)


def _z(diff: float, se: float) -> float:
    return diff / se if se > 0 and math.isfinite(se) else 0.0


def decide(control: ArmStats, canary: ArmStats, look: int, rule: Rule = Rule()) -> Decision:
    """Promote, roll back or continue, by the rule in the module docstring."""
    zc = rule.z_crit
    c, k = control.ctr, canary.ctr
    bc, bk = control.bounce, canary.bounce
    se_ctr = math.hypot(c.se, k.se)
    se_b = math.hypot(bc.se, bk.se)
    z_ctr = _z(k.value - c.value, se_ctr) if c.users and k.users else 0.0
    z_b = _z(bk.value - bc.value, se_b) if bc.users and bk.users else 0.0
    enough = (min(c.users, k.users) >= rule.min_users
              and min(c.denominator, k.denominator) >= rule.min_impressions)

    def make(action: str, reason: str) -> Decision:
        return Decision(action, reason, look, round(zc, 3), c.value, k.value, round(z_ctr, 3), bc.value,
                        bk.value, round(z_b, 3), c.users, k.users, int(k.denominator))

    if z_ctr <= -zc:
        return make("rollback", f"canary CTR {k.value:.4f} below control {c.value:.4f} (z={z_ctr:.2f} <= -{zc:.2f})")
    if z_b >= zc:
        return make("rollback", f"canary bounce {bk.value:.4f} above control {bc.value:.4f} (z={z_b:.2f} >= {zc:.2f})")
    if enough:
        ni_ctr = _z(k.value - (1 - rule.margin) * c.value, se_ctr)
        ni_b = _z((1 + rule.margin) * bc.value - bk.value, se_b)
        if ni_ctr >= zc and ni_b >= zc:
            return make("promote", f"non-inferior on CTR (z={ni_ctr:.2f}) and bounce (z={ni_b:.2f}) "
                                   f"at margin {rule.margin:.0%}")
    if look >= rule.max_looks:
        return make("rollback", f"no decision after {look} looks: not shown safe")
    return make("continue", "not enough evidence either way" if enough else "waiting for minimum exposure")
