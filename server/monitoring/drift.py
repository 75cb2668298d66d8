"""Drift: the population stability index, made sample-size aware, and the decision it drives.

PSI = sum_i (a_i - e_i) * ln(a_i / e_i) over bins, e the reference (training window) shares and
a the current window's. Binning: numeric values go into the reference's deciles (10 bins, edges
from its quantiles, ties merged, the outer bins open-ended, so every current value has a bin);
categorical values get one bin each over the union of both windows. Shares are smoothed by half a
count per bin (Jeffreys), so an empty bin gives a large but finite term.

The customary thresholds (0.1: watch, 0.25: act) are effect sizes and say nothing about noise:
for two samples of n and m drawn from the same distribution PSI / (1/n + 1/m) is approximately
chi-squared with B - 1 degrees of freedom (PSI is, to second order, the chi-squared distance), so
identical populations score (B - 1)(1/n + 1/m) on average: 0.0036 for two windows of 5,000 events
and 10 bins, but 0.18 for two of 100. A PSI therefore triggers only if it is over the threshold
AND its p-value under that null is below `alpha` (0.001 by default): large windows are not
retrained on immaterial shifts, small windows not on noise. tests/server/monitoring/test_monitoring_drift.py
measures both, and the injected drift (a category's popularity tripled in the simulator).

PSI over the category mix is blind to a small category: a category at 2% of engagement that
becomes three times as popular moves to about 6%, a PSI near 0.06, far below `act`, however
significant. So the mix is joined by a second signal, `category_ctr`: each category's CTR
(clicks / impressions of its products) relative to the rest of the catalogue's CTR in the same
window, current over reference. Test: clicks are Poisson in impressions, so given a category's
clicks in both windows, the current window's share is binomial under "no change" (the exact
conditional test of two Poisson rates, `rate_ratio_test`; exposures = impressions x the window's
rest-of-catalogue CTR, whose sampling error, from 10-50x the data, is ignored). Exact at the
handful of clicks a rarely shown category gets in a day, where the earlier z on the log ratio was
not. It acts on a RISE only: at least doubled (`CTR_ACT`; 1.5x is `watch`) AND significant,
Holm-adjusted over the categories (family-wise, any dependence; never less powerful than
Bonferroni), below `alpha`. A rise is the drift a stale model cannot see for itself: it rarely
shows the category, so its own log holds little of the new demand. A fall is at most `watch`:
bench/drift measured calm days (no drift at all) where the live model's own selection kept a large
category at 0.65x its training window's relative CTR every day, hundreds of clicks short, a raw
p near 1e-19 (it shows that category to lukewarm users too); a drop in engagement share is the mix
PSI's to catch. The same measurement is why the effect-size floor stays: a calm day had a rise of
1.85x at Holm p 0.0006 (Poisson counts are over-dispersed by the serving model's selection, so p
alone overstates), and the calm checks' closest call at 2x or more, over both bench seeds and
every 6-hourly check, had Holm p 0.03 (2.99x, 11 clicks where 4 were expected). The false-alarm
rate is therefore set by both: under the Poisson null at most `alpha` per check, family-wise; in
the bench, none in 102 checks on the reported seed, 93 on the validation seed.
Being relative to exposure and to the rest of the catalogue, it does not fire when a new model only
shows a different mix, and it names the category whose appeal changed (bench/drift measures it).
In its DriftFigure `psi` holds the top category's |ln ratio| and `measure` says so; `p_value` its
Holm-adjusted p; `top_shifts` the clicks, impressions and clicks expected under no change.

The mix PSI is advisory when the events carry impressions (a marketplace log, where the category CTR
figure is computable: impressions and clicks in both windows): `check_drift` caps it at `watch`, and
its DriftFigure's `note` says why. The mix of engagement follows exposure, and exposure is what the
serving model decides: a model retrained on a drift shows the drifted category more, so engagement's
mix moves against a training window mostly before the shock and the PSI passes `act` day after day
(bench/drift measured it: the median scenario retrained 8 times, one a day, 6 of the 7 after the
first on the mix alone). `category_ctr` is the exposure-adjusted form of the same question, so with
impressions it decides. Without impressions (a replayed MovieLens log of ratings, say) nothing
adjusts for exposure, and the mix PSI acts as above.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

WATCH, ACT = 0.1, 0.25
CTR_WATCH, CTR_ACT = 1.5, 2.0  # a category's relative CTR, current / reference (or its inverse)
ALPHA = 1e-3
N_BINS = 10


def quantile_edges(reference: Sequence[float] | np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """Inner bin edges: the reference's quantiles, duplicates merged (ties make fewer bins)."""
    ref = np.asarray(reference, dtype=np.float64)
    ref = ref[np.isfinite(ref)]
    if ref.size == 0:
        return np.zeros(0)
    return np.unique(np.quantile(ref, np.linspace(0, 1, n_bins + 1)[1:-1]))


def _shares(counts: np.ndarray) -> np.ndarray:
    counts = counts.astype(np.float64) + 0.5
    return counts / counts.sum()


def psi_from_counts(expected: Sequence[float] | np.ndarray, actual: Sequence[float] | np.ndarray) -> float:
    e, a = _shares(np.asarray(expected)), _shares(np.asarray(actual))
    return float(np.sum((a - e) * np.log(a / e)))


def chi2_sf(x: float, df: int) -> float:
    """P(X > x) for X ~ chi-squared(df), integer df, exact (series in the regularised gamma)."""
    if x <= 0:
        return 1.0
    if df <= 0:
        return 0.0
    h = x / 2.0
    if df % 2 == 0:
        term = total = 1.0
        for i in range(1, df // 2):
            term *= h / i
            total += term
        return min(1.0, math.exp(-h) * total)
    total = math.erfc(math.sqrt(h))
    term = math.sqrt(h) * 2.0 / math.sqrt(math.pi)
    for i in range(1, (df - 1) // 2 + 1):
        total += math.exp(-h) * term
        term *= h / (i + 0.5)
    return min(1.0, total)


@dataclass
class DriftFigure:
    """One signal's comparison: its PSI, the noise floor for these sample sizes, the p-value."""

    name: str
    kind: str  # numeric | categorical
    psi: float
    n_reference: int
    n_current: int
    bins: int
    noise_floor: float
    p_value: float
    level: str  # ok | watch | act
    top_shifts: list = field(default_factory=list)  # categorical: the largest share changes
    measure: str = "PSI"  # what `psi` holds: the PSI, or for category_ctr the largest |ln CTR ratio|
    note: str = ""  # why the level is not the figure's own (the mix capped at watch: see the module docstring)


def _judge(name: str, kind: str, ref_counts: np.ndarray, cur_counts: np.ndarray, watch: float, act: float,
           alpha: float, top: list | None = None) -> DriftFigure:
    n, m, b = int(ref_counts.sum()), int(cur_counts.sum()), int(ref_counts.size)
    if n == 0 or m == 0 or b < 2:
        return DriftFigure(name, kind, 0.0, n, m, b, 0.0, 1.0, "ok", top or [])
    value = psi_from_counts(ref_counts, cur_counts)
    scale = 1.0 / n + 1.0 / m
    p = chi2_sf(value / scale, b - 1)
    level = "ok"
    if p < alpha:
        level = "act" if value >= act else "watch" if value >= watch else "ok"
    return DriftFigure(name, kind, round(value, 5), n, m, b, round((b - 1) * scale, 5), p, level, top or [])


def numeric_drift(name: str, reference: Sequence[float], current: Sequence[float], n_bins: int = N_BINS,
                  watch: float = WATCH, act: float = ACT, alpha: float = ALPHA) -> DriftFigure:
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
    edges = quantile_edges(ref, n_bins)
    nb = edges.size + 1
    rc = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=nb)
    cc = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=nb)
    return _judge(name, "numeric", rc, cc, watch, act, alpha)


def categorical_drift(name: str, reference: Mapping[Hashable, float] | Iterable[Hashable],
                      current: Mapping[Hashable, float] | Iterable[Hashable], watch: float = WATCH,
                      act: float = ACT, alpha: float = ALPHA, n_top: int = 3) -> DriftFigure:
    ref = reference if isinstance(reference, Mapping) else Counter(reference)
    cur = current if isinstance(current, Mapping) else Counter(current)
    keys = sorted(set(ref) | set(cur), key=str)
    rc = np.array([ref.get(k, 0) for k in keys], dtype=np.float64)
    cc = np.array([cur.get(k, 0) for k in keys], dtype=np.float64)
    top = []
    if rc.sum() and cc.sum():
        d = cc / cc.sum() - rc / rc.sum()
        top = [{"value": str(keys[i]), "reference_share": round(float(rc[i] / rc.sum()), 4),
                "current_share": round(float(cc[i] / cc.sum()), 4)} for i in np.argsort(-np.abs(d))[:n_top]]
    return _judge(name, "categorical", rc, cc, watch, act, alpha, top)


@dataclass
class DriftDecision:
    """The record a retraining trigger logs: what was compared, every figure, and the verdict."""

    retrain: bool
    level: str  # ok | watch | act: the worst signal's
    reasons: list[str]
    figures: list[DriftFigure]
    reference_window: tuple[float, float] | None = None
    current_window: tuple[float, float] | None = None
    thresholds: dict = field(default_factory=lambda: {"watch": WATCH, "act": ACT, "alpha": ALPHA})
    decided_at: float = field(default_factory=time.time)

    def to_dict(self) -> dict:
        return asdict(self)


def decide(figures: list[DriftFigure], reference_window: tuple[float, float] | None = None,
           current_window: tuple[float, float] | None = None, watch: float = WATCH, act: float = ACT,
           alpha: float = ALPHA) -> DriftDecision:
    """Retrain if any signal is at `act`: over the act threshold and beyond the noise floor."""
    order = {"ok": 0, "watch": 1, "act": 2}
    level = max((f.level for f in figures), key=order.__getitem__, default="ok")
    reasons = [f"{f.name}: {f.measure} {f.psi:.3f} (noise floor {f.noise_floor:.4f}, p={f.p_value:.2g}) -> {f.level}"
               + (f" [{f.top_shifts[0]['value']}]" if f.kind == "ctr_ratio" and f.top_shifts else "")
               + (f" ({f.note})" if f.note else "")
               for f in figures if f.level != "ok"]
    return DriftDecision(level == "act", level, reasons, figures, reference_window, current_window,
                         {"watch": watch, "act": act, "alpha": alpha})


def category_mix(events: Iterable, item_category: Mapping[int, str],
                 types: tuple[str, ...] = ("click", "add_to_cart", "purchase")) -> Counter:
    """Counts of events per category of their item: what users engage with (not what was shown)."""
    return Counter(item_category.get(e.item_id, "unknown") for e in events
                   if e.type in types and e.item_id is not None)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error rate over the tests, any dependence).

    Uniformly more powerful than Bonferroni: the smallest p is multiplied by m, the next by m - 1...
    (with the running maximum, so the adjusted values keep the raw values' order).
    """
    m = len(p_values)
    out, running = [1.0] * m, 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda j: p_values[j])):
        running = max(running, (m - rank) * p_values[i])
        out[i] = min(1.0, running)
    return out


def rate_ratio_test(ref_clicks: int, ref_exposure: float, cur_clicks: int, cur_exposure: float) -> tuple[float, float, float]:
    """Exact conditional test of two Poisson rates: (P upper, P lower, expected current clicks).

    Clicks ~ Poisson(rate x exposure) in each window. Given the total T = ref_clicks + cur_clicks,
    cur_clicks is Binomial(T, pi0) under equal rates, pi0 = cur_exposure / (ref_exposure +
    cur_exposure), whatever the (unknown) common rate: so the test is exact at any count, where a z
    on the log ratio overstates small counts. P upper = P(X >= cur_clicks), the evidence that the
    rate rose; P lower = P(X <= cur_clicks). Exposures are impressions, each scaled by its window's
    base CTR when comparing relative rates (category_ctr_drift).
    """
    from scipy.stats import binom

    t = int(ref_clicks) + int(cur_clicks)
    if t == 0 or cur_exposure <= 0 or ref_exposure <= 0:
        return 1.0, 1.0, 0.0
    pi0 = cur_exposure / (ref_exposure + cur_exposure)
    return float(binom.sf(cur_clicks - 1, t, pi0)), float(binom.cdf(cur_clicks, t, pi0)), t * pi0


def category_ctr_drift(name: str, reference_events: Iterable, current_events: Iterable,
                       item_category: Mapping[int, str], watch: float = CTR_WATCH, act: float = CTR_ACT,
                       alpha: float = ALPHA, n_top: int = 3) -> DriftFigure:
    """Each category's CTR relative to the rest of the catalogue's, current over reference; see the
    module docstring. `act` on a significant rise only (Holm over categories); a fall is at most `watch`."""

    def tally(events) -> tuple[Counter, Counter]:
        clicks: Counter[str] = Counter()
        imps: Counter[str] = Counter()
        for e in events:
            if e.item_id is None:
                continue
            if e.type == "impression":
                imps[item_category.get(e.item_id, "unknown")] += 1
            elif e.type == "click":
                clicks[item_category.get(e.item_id, "unknown")] += 1
        return clicks, imps

    return category_ctr_figure(name, *tally(reference_events), *tally(current_events), watch, act, alpha, n_top)


def category_ctr_figure(name: str, rc: Mapping[str, int], ri: Mapping[str, int], cc: Mapping[str, int],
                        ci: Mapping[str, int], watch: float = CTR_WATCH, act: float = CTR_ACT, alpha: float = ALPHA,
                        n_top: int = 3) -> DriftFigure:
    """category_ctr_drift on counts: clicks and impressions per category, reference then current."""
    rc, ri, cc, ci = (Counter(x) for x in (rc, ri, cc, ci))
    n, m = sum(ri.values()), sum(ci.values())
    nrc, ncc = sum(rc.values()), sum(cc.values())
    keys = sorted(k for k in set(ri) & set(ci) if ri[k] and ci[k] and n > ri[k] and m > ci[k])
    if not keys or not nrc or not ncc:
        return DriftFigure(name, "ctr_ratio", 0.0, n, m, len(keys), 0.0, 1.0, "ok", [], "|ln CTR ratio| of the top category")
    rows: list[dict[str, Any]] = []
    for k in keys:
        # the rest of the catalogue's CTR in each window: the base a category's CTR is relative to
        # (it absorbs a change of the whole window's CTR, such as a new model's)
        base_r = max(nrc - rc[k], 0.5) / (n - ri[k])
        base_c = max(ncc - cc[k], 0.5) / (m - ci[k])
        up, down, expected = rate_ratio_test(rc[k], ri[k] * base_r, cc[k], ci[k] * base_c)
        a, b, c, d = rc[k] + 0.5, ri[k] + 1.0, cc[k] + 0.5, ci[k] + 1.0  # Jeffreys-smoothed, for the ratio
        lr = math.log((c / d / base_c) / (a / b / base_r))
        rows.append({"key": k, "lr": lr, "se": math.sqrt(1 / a + 1 / c), "up": up, "down": down,
                     "expected": expected, "ref": a / b, "cur": c / d, "clicks": cc[k], "imps": ci[k]})
    for side in ("up", "down"):
        for r, adj in zip(rows, holm([r[side] for r in rows])):
            r[f"{side}_adj"] = adj
    for r in rows:
        r["level"] = "ok"
        if r["up_adj"] < alpha and r["lr"] > 0:
            r["level"] = "act" if r["lr"] >= math.log(act) else "watch" if r["lr"] >= math.log(watch) else "ok"
        elif r["down_adj"] < alpha and r["lr"] <= -math.log(watch):
            r["level"] = "watch"  # a fall: logged, not acted on (see the module docstring)
        r["p"] = r["up_adj"] if r["lr"] > 0 else r["down_adj"]
    order = {"ok": 0, "watch": 1, "act": 2}
    rows.sort(key=lambda r: (-order[r["level"]], r["up_adj"], -r["lr"]))  # the likeliest rise first
    t = rows[0]
    top = [{"value": str(r["key"]), "reference_ctr": round(r["ref"], 5), "current_ctr": round(r["cur"], 5),
            "relative_ratio": round(math.exp(r["lr"]), 3), "clicks": r["clicks"], "impressions": r["imps"],
            "expected_clicks": round(r["expected"], 2), "p_value": r["p"], "p_rise": r["up_adj"], "level": r["level"]}
           for r in rows[:n_top]]
    return DriftFigure(name, "ctr_ratio", round(abs(t["lr"]), 5), n, m, len(keys), round(t["se"], 5), t["p"],
                       t["level"], top, "|ln CTR ratio| of the top category")


def mix_advisory(mix: DriftFigure, ctr: DriftFigure) -> DriftFigure:
    """The mix figure as `check_drift` weighs it: at most `watch` when the category CTR figure was
    computable (the events carry impressions), as it is for any log without them (module docstring)."""
    if mix.level != "act" or not ctr.top_shifts:  # no top_shifts: no impressions or clicks in a window
        return mix
    why = ("engagement mix moved; the exposure-adjusted category CTR did not: the serving model's own exposure "
           "explains it" if ctr.level != "act" else "advisory with impressions: the category CTR decides")
    return replace(mix, level="watch", note=f"capped at watch from act: {why}")


def check_drift(reference_events: Sequence, current_events: Sequence, item_category: Mapping[int, str],
                reference_scores: Sequence[float] | None = None, current_scores: Sequence[float] | None = None,
                features: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
                watch: float = WATCH, act: float = ACT, alpha: float = ALPHA) -> DriftDecision:
    """Category mix of engagement, category CTR, score distribution and named features, current vs reference.
    With impressions in the events the mix is advisory (at most `watch`; `mix_advisory`)."""
    mix = categorical_drift("category_mix", category_mix(reference_events, item_category),
                            category_mix(current_events, item_category), watch, act, alpha)
    ctr = category_ctr_drift("category_ctr", reference_events, current_events, item_category, alpha=alpha)
    figs = [mix_advisory(mix, ctr), ctr]
    if reference_scores is not None and current_scores is not None:
        figs.append(numeric_drift("scores", reference_scores, current_scores, watch=watch, act=act, alpha=alpha))
    for name, (ref, cur) in (features or {}).items():
        figs.append(numeric_drift(f"feature:{name}", ref, cur, watch=watch, act=act, alpha=alpha))

    def span(evs: Sequence) -> tuple[float, float] | None:
        ts = [e.timestamp for e in evs]
        return (min(ts), max(ts)) if ts else None

    return decide(figs, span(reference_events), span(current_events), watch, act, alpha)
