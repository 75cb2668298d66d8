"""Drift recovery on the SYNTHETIC marketplace simulator: detect a tripled category, retrain, recover CTR.

    python -m bench drift        # figures on stdout; a section in docs/ab.md, docs/drift.png
    python -m bench.drift --seed 7 --half-life-days 2 --no-write   # a validation run (how the half-life was chosen)

Timeline: days 0-5 the simulator's popularity feed (the first model's training log); days 6-9 that
model serves; at the start of day 10 a scheduled retrain on the days before (`WINDOW_DAYS`) makes
the model the drift meets (its training log is a served log, as in production). Then three arms on
the same users, sessions and coins (server.monitoring.simulate.FeedbackSimulator):

- no drift: that model serves to the end;
- drift, stale model: from SHOCK_DAY the least engaged category is 3x as popular (demand moves to
  it: the other categories' click odds shrink so the catalogue's mean odds stay the same);
- drift + retrain: the same drift; every morning the drift check (server.monitoring.drift.
  check_drift: category mix and category CTR, yesterday against the live model's training window)
  runs, and on `act` the gated retrain of server.holdout (gated_retrain: the same window,
  leave-last-out hold-out and accuracy gate as `pocketrank retrain`) serves from that day if it
  passes; its window becomes the reference. As `pocketrank retrain --if-drift` from a daily cron.
  Every retrain (the scheduled one too) weights its training events by recency with the job's
  half-life (server.retrain.SIMULATOR_HALF_LIFE_DAYS unless --half-life-days), via gated_retrain.
  The retrain runs in the same morning job right after the check that detected the drift: the
  check needs a full day of the new behaviour (its current window), so on this daily schedule
  there is no earlier moment to retrain at.

The retrain fits the simulator bench's item model (fit_item_model, as bench/ab uses, plus a popularity
term per category: CATEGORY_BIAS, chosen with the half-life on a validation seed) rather than
the torch Recommender: that model learns from engagement sequences alone, not impressions and
popularity, which drive the simulator's clicks, and the bench must run in minutes on 2 cores.
CTR per phase with 95% bootstrap intervals over users (paired: one resample for every arm), and
recovered share = (CTR_retrained - CTR_stale) / (CTR_nodrift - CTR_stale) over the days after the
first drift retrain.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np

from bench._sections import write_section
from server import holdout, retrain
from server.monitoring import drift
from server.monitoring.simulate import FeedbackSimulator, PersonalPolicy, fit_item_model, item_categories, warmup
from server.simulator import CATEGORIES, SimConfig
from shared.features import UserState, update_user_state, user_vector

CONFIG = SimConfig(n_users=3000, n_items=800, n_categories=12, dim=16, n_days=20, seed=21)
WARMUP_DAYS = 6  # the simulator's popularity feed: the first model's training log
SCHEDULED_DAY = 10  # a scheduled retrain on the days the first model served: the model the drift meets
SHOCK_DAY = 12
FACTOR = 3.0
WINDOW_DAYS = 10.0  # every retrain's window: the days before it
N_BOOT = 1000
DAY = 86_400.0
DOCS = Path(__file__).resolve().parent.parent / "docs"
_SCHEDULED: dict = {}  # the scheduled retrain sees the same log in every arm: fitted once


HALF_LIFE_DAYS = retrain.SIMULATOR_HALF_LIFE_DAYS  # --half-life-days overrides (validation runs)
VALIDATION_SEED = 7
# The validation grid behind HALF_LIFE_DAYS and CATEGORY_BIAS (seed 7, never the reported seed 21):
# recovered share over days 13-19 [95% CI], one run each. Filled from the runs' output by hand.
VALIDATION = {
    "plain": {None: "38% [28, 49]", 0.5: "47% [37, 58]", 1: "42% [32, 53]", 2: "36% [26, 46]", 3: "34% [24, 44]",
              5: "40% [31, 50]", 10: "31% [22, 41]"},
    "category_bias": {None: "33% [23, 44]", 0.5: "53% [39, 66]", 1: "**57% [47, 69]**", 2: "40% [30, 51]",
                      3: "44% [34, 54]"},
}


# fit_item_model's per-category popularity term: chosen with the half-life on the validation seed
# (VALIDATION above: with it and H = 1 day, 57%; without it at most 47%). --no-category-bias: off.
CATEGORY_BIAS = True


def fit(events, cats, weights=None):
    return fit_item_model(events, cats, CONFIG.n_categories, dim=16, weights=weights, category_bias=CATEGORY_BIAS)


def top_k(model, history: list[int], k: int, shown: list[int] | None = None) -> list[int]:
    """The bench policy's ranking for the hold-out: bias + vector . fold of the history, over the items
    shown in the pick's session (or every item but the history)."""
    st = UserState.empty(model.vectors.shape[1])
    for i in history:
        st = update_user_state(st, model.vectors[i], "click")
    uv = user_vector(st) if st.w > 0 else None
    if shown is not None:
        cands = np.array(shown, dtype=np.int64)
        return cands[np.argsort(-model.scores(uv, cands), kind="stable")][:k].tolist()
    s = model.scores(uv, np.arange(model.vectors.shape[0]))
    s[0] = -np.inf
    s[np.array(history, dtype=np.int64)] = -np.inf
    return np.argsort(-s, kind="stable")[:k].tolist()


class ServingPolicy:
    """A PersonalPolicy whose model is replaced by retrains, as `pocketrank retrain` would replace it.

    At the start of SCHEDULED_DAY every arm retrains on the days its first model served (a model's
    training log is normally its predecessor's serving log, not a popularity feed). With
    `watch_drift`, every later morning checks yesterday against the live model's training window
    (drift.check_drift) and retrains on `act`; a retrain serves only if its gate passes.
    """

    def __init__(self, model, history, cats, log: list, watch_drift: bool):
        self.history, self.cats, self.log, self.watch_drift = history, cats, log, watch_drift
        self.names = {i: CATEGORIES[c] for i, c in cats.items()}
        self.live, self.reference = model, None
        self.inner = PersonalPolicy(model, history, realtime=True, model_version="m0")
        self.checks, self.retrains = [], []

    def _retrain(self, day: int, trigger: str) -> None:
        t = CONFIG.start_time + day * DAY
        window = (t - WINDOW_DAYS * DAY, t - 1e-6)
        events = self.history + self.log
        if trigger == "scheduled" and day in _SCHEDULED:
            out, took = _SCHEDULED[day]
        else:
            t0 = time.perf_counter()
            out = holdout.gated_retrain(events, window, lambda tr, w: fit(tr, self.cats, w), top_k, self.live,
                                        half_life_days=HALF_LIFE_DAYS)
            took = time.perf_counter() - t0
            if trigger == "scheduled":
                _SCHEDULED[day] = (out, took)
        self.retrains.append({"day": day, "trigger": trigger, "gate": out.gate, "holdout": out.holdout,
                              "counts": out.counts, "seconds": took})
        if out.gate["passed"]:
            self.live, self.reference = out.model, holdout.in_window(events, *window)
            self.inner = PersonalPolicy(out.model, events, realtime=True, model_version=f"r{day}")

    def start_day(self, day: int) -> None:
        t = CONFIG.start_time + day * DAY
        if day == SCHEDULED_DAY:
            self._retrain(day, "scheduled")
        elif self.watch_drift and self.reference is not None:
            d = drift.check_drift(self.reference, [e for e in self.log if t - DAY <= e.timestamp < t], self.names)
            self.checks.append((day - 1, d))
            if d.retrain:
                self._retrain(day, "drift")
        self.inner.start_day(day)

    def slate(self, ctx, candidates, k):
        return self.inner.slate(ctx, candidates, k)

    def observe(self, ctx, etype, item_id):
        self.inner.observe(ctx, etype, item_id)


def run(policy, shock: bool, log: list | None = None):
    fs = FeedbackSimulator(CONFIG, first_day=WARMUP_DAYS, shock=(SHOCK_DAY, SHOCKED, FACTOR) if shock else None,
                           conserve=True)
    log = [] if log is None else log
    for s in fs.sessions(policy):
        log.extend(s)
    return log, fs.shock_other_factor


def per_user_days(events, days: range) -> dict[str, np.ndarray]:
    """Clicks and impressions per user over the given days (a session counts on its start day)."""
    out: dict[str, np.ndarray] = {}
    lo, hi = CONFIG.start_time + days.start * DAY, CONFIG.start_time + days.stop * DAY
    for e in events:
        if lo <= e.timestamp < hi and e.type in ("click", "impression"):
            row = out.setdefault(e.user_id, np.zeros(2))
            row[0 if e.type == "click" else 1] += 1
    return out


def bootstrap(arms: dict[str, dict[str, np.ndarray]], seed: int = 0, recovered: bool = True) -> dict:
    users = sorted(set().union(*arms.values()))
    mats = {a: np.stack([pu.get(u, np.zeros(2)) for u in users]) for a, pu in arms.items()}
    idx = np.random.default_rng(seed).integers(0, len(users), size=(N_BOOT, len(users)))
    ctr = {a: m[:, 0].sum() / m[:, 1].sum() for a, m in mats.items()}
    boot = {a: m[idx].sum(axis=1) for a, m in mats.items()}
    bctr = {a: b[:, 0] / b[:, 1] for a, b in boot.items()}
    out = {a: (float(ctr[a]), *np.percentile(bctr[a], [2.5, 97.5]).tolist()) for a in mats}
    if recovered:
        share = (ctr["retrained"] - ctr["stale"]) / (ctr["nodrift"] - ctr["stale"])
        bshare = (bctr["retrained"] - bctr["stale"]) / (bctr["nodrift"] - bctr["stale"])
        out["recovered"] = (float(share), *np.percentile(bshare, [2.5, 97.5]).tolist())
        out["lost"] = (float(ctr["nodrift"] - ctr["stale"]),
                       *np.percentile(bctr["nodrift"] - bctr["stale"], [2.5, 97.5]).tolist())
    out["users"] = len(users)
    return out


def _top(decision) -> str:
    f = decision.figures[1]
    return f.top_shifts[0]["value"] if f.top_shifts else "-"


def _pct(v) -> str:
    return f"{100 * v[0]:.2f}% [{100 * v[1]:.2f}, {100 * v[2]:.2f}]"


def plot(daily: dict[str, list[float]], days: list[int], retrain_day: int | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 3.4))
    for name, color in (("nodrift", "#2c6e49"), ("stale", "#b23a48"), ("retrained", "#d68c45")):
        ax.plot(days, [100 * x for x in daily[name]], marker="o", ms=3, color=color,
                label={"nodrift": "no drift", "stale": "drift, stale model", "retrained": "drift + retrain"}[name])
    ax.axvline(SHOCK_DAY - 0.5, color="#777", ls="--", lw=1)
    ax.text(SHOCK_DAY - 0.4, ax.get_ylim()[1], " shock", va="top", fontsize=8, color="#555")
    if retrain_day is not None:
        ax.axvline(retrain_day - 0.5, color="#d68c45", ls=":", lw=1)
        ax.text(retrain_day - 0.4, ax.get_ylim()[0], " retrained", va="bottom", fontsize=8, color="#d68c45")
    ax.set_xlabel("simulated day")
    ax.set_ylabel("CTR (%)")
    ax.set_title("SIMULATED drift recovery (synthetic marketplace, not real users)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def daily_ctr(events, days) -> list[float]:
    c, i = Counter(), Counter()
    for e in events:
        d = int((e.timestamp - CONFIG.start_time) // DAY)
        if e.type == "click":
            c[d] += 1
        elif e.type == "impression":
            i[d] += 1
    return [c[d] / i[d] if i[d] else float("nan") for d in days]


SHOCKED = 0  # set in main: the least engaged category of the warm-up log


def parse(argv: list[str]):
    import argparse

    ap = argparse.ArgumentParser(prog="python -m bench drift")
    ap.add_argument("--seed", type=int, default=CONFIG.seed,
                    help=f"simulator seed; the reported run is the default {CONFIG.seed}, choose settings on another")
    ap.add_argument("--half-life-days", type=float, default=None,
                    help="recency half-life of every retrain (0: none; default: pocketrank retrain's)")
    ap.add_argument("--category-bias", action=argparse.BooleanOptionalAction, default=None,
                    help=f"the item model's popularity term per category (default: {CATEGORY_BIAS}, the chosen one)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/ alone (validation runs)")
    return ap.parse_args(argv)


def main(argv: list[str]) -> int:
    global SHOCKED, CONFIG, HALF_LIFE_DAYS, CATEGORY_BIAS
    args = parse(argv)
    if args.seed != CONFIG.seed and not args.no_write:
        raise SystemExit("the docs report the default seed; add --no-write for a run on another seed")
    CONFIG = replace(CONFIG, seed=args.seed)
    if args.category_bias is not None:
        CATEGORY_BIAS = args.category_bias
    if args.half_life_days is not None:
        HALF_LIFE_DAYS = retrain.half_life(args.half_life_days)
    start = time.perf_counter()
    _SCHEDULED.clear()
    sim, history = warmup(CONFIG, WARMUP_DAYS)
    cats = item_categories(sim)
    names = {i: CATEGORIES[c] for i, c in cats.items()}
    mix = drift.category_mix(history, names)
    SHOCKED = CATEGORIES.index(min(CATEGORIES[: CONFIG.n_categories], key=lambda c: (mix.get(c, 0), c)))
    t0 = time.perf_counter()
    model = fit(history, cats)
    print(f"seed {CONFIG.seed}; recency half-life {HALF_LIFE_DAYS or 'none'} days; category bias {CATEGORY_BIAS}")
    print(f"warm-up: {len(history):,} events, {WARMUP_DAYS} days; item model fitted in {time.perf_counter() - t0:.1f} s; "
          f"shocked category: {CATEGORIES[SHOCKED]} (least engaged in the warm-up, "
          f"{100 * mix.get(CATEGORIES[SHOCKED], 0) / sum(mix.values()):.1f}% of engagements)")

    logs, policies = {}, {}
    for name, shock, watch in (("nodrift", False, False), ("stale", True, False), ("retrained", True, True)):
        t0 = time.perf_counter()
        log: list = []
        policies[name] = ServingPolicy(model, history, cats, log, watch_drift=watch)
        logs[name], other = run(policies[name], shock, log)
        print(f"  {name:9s} {len(logs[name]):>9,} events ({time.perf_counter() - t0:.0f} s); retrains: " + ", ".join(
            f"day {r['day']} {r['trigger']} {'passed' if r['gate']['passed'] else 'FAILED: ' + '; '.join(r['gate']['reasons'])}"
            for r in policies[name].retrains))

    # Detection, the same check on the no-drift and stale arms' days, against the scheduled model's window.
    reference = policies["nodrift"].reference
    test_days = list(range(WARMUP_DAYS, CONFIG.n_days))
    checked = list(range(SCHEDULED_DAY, CONFIG.n_days))
    checks = {}
    for name in ("nodrift", "stale"):
        checks[name] = {}
        for d in checked:
            lo = CONFIG.start_time + d * DAY
            checks[name][d] = drift.check_drift(reference, [e for e in logs[name] if lo <= e.timestamp < lo + DAY], names)
    detected = next((d for d in checked if d >= SHOCK_DAY and checks["stale"][d].retrain), None)
    false_alarms = sorted({d for d in checked if checks["nodrift"][d].retrain}
                          | {d for d in checked if d < SHOCK_DAY and checks["stale"][d].retrain})
    drift_retrains = [r for r in policies["retrained"].retrains if r["trigger"] == "drift"]
    retrain_day = next((r["day"] for r in drift_retrains if r["gate"]["passed"]), None)
    after = range(retrain_day if retrain_day is not None else SHOCK_DAY + 1, CONFIG.n_days)
    res = {"after": bootstrap({a: per_user_days(logs[a], after) for a in logs}),
           "since": bootstrap({a: per_user_days(logs[a], range(SHOCK_DAY + 1, CONFIG.n_days)) for a in logs}),
           "late": bootstrap({a: per_user_days(logs[a], range(CONFIG.n_days - 3, CONFIG.n_days)) for a in logs}),
           "before": bootstrap({a: per_user_days(logs[a], range(SCHEDULED_DAY, SHOCK_DAY)) for a in logs}, recovered=False),
           "shock_day": bootstrap({a: per_user_days(logs[a], range(SHOCK_DAY, SHOCK_DAY + 1)) for a in logs},
                                  recovered=False)}
    daily = {a: daily_ctr(logs[a], test_days) for a in logs}
    meta = {"detected": detected, "false_alarms": false_alarms, "retrain_day": retrain_day, "after": after,
            "other_factor": other, "checks": checks, "retrains": policies["retrained"].retrains,
            "warmup_events": len(history)}

    print("\nSIMULATED drift recovery (synthetic marketplace; not real users). CTR, 95% bootstrap CIs over users:")
    for phase, label in (("before", f"days {SCHEDULED_DAY}-{SHOCK_DAY - 1} (before the shock)"),
                         ("shock_day", f"day {SHOCK_DAY} (shock; detection window)"),
                         ("after", f"days {after.start}-{after.stop - 1} (after the retrain)")):
        r = res[phase]
        print(f"  {label}: no drift {_pct(r['nodrift'])}  stale {_pct(r['stale'])}  retrained {_pct(r['retrained'])}")
    a = res["after"]
    print(f"  CTR lost to the drift (no drift - stale): {100 * a['lost'][0]:+.3f} pts [{100 * a['lost'][1]:+.3f}, "
          f"{100 * a['lost'][2]:+.3f}]")
    print(f"  recovered share: {100 * a['recovered'][0]:.0f}% [{100 * a['recovered'][1]:.0f}, {100 * a['recovered'][2]:.0f}]; "
          f"last 3 days {100 * res['late']['recovered'][0]:.0f}% [{100 * res['late']['recovered'][1]:.0f}, "
          f"{100 * res['late']['recovered'][2]:.0f}]")
    sr = res["since"]["recovered"]
    print(f"  recovered share from day {SHOCK_DAY + 1} (the first morning a retrain could act; a late detection counts "
          f"against it): {100 * sr[0]:.0f}% [{100 * sr[1]:.0f}, {100 * sr[2]:.0f}]")
    print(f"  detected on day {detected} (shock on day {SHOCK_DAY}); false alarms: {false_alarms or 'none'}")
    for r in policies["retrained"].retrains:
        h = r["holdout"]
        print(f"  {r['trigger']} retrain at the start of day {r['day']}: gate {'passed' if r['gate']['passed'] else 'FAILED'}; "
              f"hold-out {h['candidate']['users']} users nDCG@10 {h['candidate']['nDCG@10']:.4f} vs live "
              f"{h['live']['nDCG@10']:.4f}; {r['counts']['events_in_window']:,} events; {r['seconds']:.0f} s")
    for d in checked:
        st, nd = checks["stale"][d], checks["nodrift"][d]
        print(f"    day {d}: drift arm: mix PSI {st.figures[0].psi:.4f} ({st.figures[0].level}), category CTR "
              f"|ln ratio| {st.figures[1].psi:.3f} ({st.figures[1].level}, p={st.figures[1].p_value:.2g}, "
              f"{st.figures[1].top_shifts[0]['value'] if st.figures[1].top_shifts else '-'});  no drift: mix PSI "
              f"{nd.figures[0].psi:.4f} ({nd.figures[0].level}), CTR {nd.figures[1].psi:.3f} ({nd.figures[1].level})")
    meta["seconds"] = time.perf_counter() - start
    if args.no_write:
        print(f"validation run: docs left alone ({meta['seconds']:.0f} s)")
        return 0
    DOCS.mkdir(exist_ok=True)
    plot(daily, test_days, retrain_day, DOCS / "drift.png")
    write_section(DOCS / "ab.md", "drift", report(res, meta))
    write_section(DOCS / "benchmarks.md", "drift", summary(res, meta))
    print(f"wrote docs/drift.png and the drift section of docs/ab.md in {meta['seconds']:.0f} s")
    return 0


def summary(res: dict, meta: dict) -> str:
    a, late = res["after"], res["late"]
    return "\n".join([
        "## Drift recovery (simulated; `python -m bench drift`)",
        "",
        f"A category's popularity tripled on day {SHOCK_DAY} of the synthetic marketplace simulator (demand moved",
        f"to it). Detected on day {meta['detected']} (category CTR signal; false alarms: {meta['false_alarms'] or 'none'}); "
        f"`retrain --if-drift` every morning, training events weighted by recency (half-life {HALF_LIFE_DAYS or 'none'} "
        f"days{'; item model with a popularity term per category' if CATEGORY_BIAS else ''}; chosen on seed "
        f"{VALIDATION_SEED}, reported on seed {CONFIG.seed}):",
        "",
        "| days | no drift | drift, stale model | drift + retrain | recovered share |",
        "| --- | --- | --- | --- | --- |",
        f"| {meta['after'].start}-{meta['after'].stop - 1} | {_pct(a['nodrift'])} | {_pct(a['stale'])} | "
        f"{_pct(a['retrained'])} | {100 * a['recovered'][0]:.0f}% [{100 * a['recovered'][1]:.0f}, {100 * a['recovered'][2]:.0f}] |",
        *([f"| {SHOCK_DAY + 1}-{CONFIG.n_days - 1} (from the first possible retrain) | {_pct(res['since']['nodrift'])} | "
           f"{_pct(res['since']['stale'])} | {_pct(res['since']['retrained'])} | "
           f"{100 * res['since']['recovered'][0]:.0f}% [{100 * res['since']['recovered'][1]:.0f}, "
           f"{100 * res['since']['recovered'][2]:.0f}] |"] if meta["after"].start != SHOCK_DAY + 1 else []),
        f"| {CONFIG.n_days - 3}-{CONFIG.n_days - 1} | {_pct(late['nodrift'])} | {_pct(late['stale'])} | "
        f"{_pct(late['retrained'])} | {100 * late['recovered'][0]:.0f}% [{100 * late['recovered'][1]:.0f}, "
        f"{100 * late['recovered'][2]:.0f}] |",
        "",
        "Details, the PSI and CTR-ratio figures per day and why the share is what it is: "
        "[docs/ab.md](ab.md#drift-recovery-simulated).",
    ])


def report(res: dict, meta: dict) -> str:
    a, b, s = res["after"], res["before"], res["shock_day"]
    after = meta["after"]
    rows = [("before", f"days {SCHEDULED_DAY}-{SHOCK_DAY - 1}, before the shock", b),
            ("shock", f"day {SHOCK_DAY}, the shock (detection window)", s),
            ("after", f"days {after.start}-{after.stop - 1}, after the retrain", a)]
    rec = a["recovered"]
    lines = [
        "## Drift recovery (simulated)",
        "",
        "**A simulation**, like the rest of this page. Regenerate with `python -m bench drift`",
        f"({meta['seconds']:.0f} s on 2 shared cores).",
        "",
        f"From day {SHOCK_DAY}, {CATEGORIES[SHOCKED]} (the least engaged category of the warm-up) is {FACTOR:g}x as",
        f"popular: its products' click odds and feed weight are multiplied by {FACTOR:g}, and every other",
        f"category's click odds by {meta['other_factor']:.3f}, so the catalogue's mean odds stay as they were",
        "(demand moves to the category; it does not grow: with growth alone a stale model gains CTR rather",
        "than losing it, and there is nothing to recover). The model the drift meets was retrained on day",
        f"{SCHEDULED_DAY} on the {WINDOW_DAYS:g} days before (its training log is a served log, as in production). Three",
        "arms run the same users, sessions and coins: no drift; drift with that model kept (stale); drift",
        "with `retrain --if-drift` every morning (drift + retrain). Every retrain, the scheduled one too,",
        f"weights its training events by recency, half-life {HALF_LIFE_DAYS or 'none'} days (`pocketrank retrain "
        "--half-life-days`, through the same `gated_retrain`), and the item model learns a popularity term per",
        f"category (`fit_item_model(category_bias={CATEGORY_BIAS})`); both chosen on simulator seed {VALIDATION_SEED}, not on this",
        f"seed ({CONFIG.seed}): see below. The retrain runs right after the check that detects the drift, in the same",
        "morning job: the check needs the day's data, so a daily schedule has no earlier moment.",
        "",
        "| phase | no drift | drift, stale model | drift + retrain |",
        "| --- | --- | --- | --- |",
        *[f"| {label} | {_pct(r['nodrift'])} | {_pct(r['stale'])} | {_pct(r['retrained'])} |" for _, label, r in rows],
        "",
        f"- **Detected on day {meta['detected']}** (the shock came on day {SHOCK_DAY}; a day is checked, and acted on, the next",
        f"  morning); false alarms on calm days, in either arm: {meta['false_alarms'] or 'none'}. Each day against the",
        "  scheduled model's training window (the drift arm's days as served by the stale model):",
        "",
        "  | day | category mix PSI, drift | category CTR \\|ln ratio\\|, drift (category, p) | level | mix PSI, no drift | CTR \\|ln ratio\\|, no drift | level |",
        "  | --- | --- | --- | --- | --- | --- | --- |",
        *[f"  | {d} | {st.figures[0].psi:.4f} | {st.figures[1].psi:.3f} ({_top(st)}, {st.figures[1].p_value:.2g}) | "
          f"{st.level} | {nd.figures[0].psi:.4f} | {nd.figures[1].psi:.3f} | {nd.level} |"
          for d, st, nd in ((d, meta["checks"]["stale"][d], meta["checks"]["nodrift"][d]) for d in sorted(meta["checks"]["stale"]))],
        "",
        *[f"- {r['trigger'].capitalize()} retrain at the start of day {r['day']} on the {WINDOW_DAYS:g} days before it "
          f"({r['counts']['events_in_window']:,} events, {r['counts']['holdout_users']:,} hold-out users): candidate nDCG@10 "
          f"{r['holdout']['candidate']['nDCG@10']:.4f}, HR@10 {r['holdout']['candidate']['HR@10']:.4f}; live "
          f"{r['holdout']['live']['nDCG@10']:.4f}, {r['holdout']['live']['HR@10']:.4f}: "
          f"{'passed' if r['gate']['passed'] else 'rejected (' + '; '.join(r['gate']['reasons']) + ')'}."
          for r in meta["retrains"]],
        f"- CTR lost to the drift after the retrain (no drift - stale): {100 * a['lost'][0]:+.3f} points "
        f"[{100 * a['lost'][1]:+.3f}, {100 * a['lost'][2]:+.3f}].",
        f"- **Recovered share** (CTR_retrained - CTR_stale) / (CTR_nodrift - CTR_stale) over days {after.start}-{after.stop - 1}: "
        f"**{100 * rec[0]:.0f}%** [{100 * rec[1]:.0f}, {100 * rec[2]:.0f}]; over the last 3 days "
        f"{100 * res['late']['recovered'][0]:.0f}% [{100 * res['late']['recovered'][1]:.0f}, "
        f"{100 * res['late']['recovered'][2]:.0f}] (paired bootstrap over {a['users']:,} users, {N_BOOT} resamples).",
        *([f"- Detection came a day after the shock day's own check: over days {SHOCK_DAY + 1}-{CONFIG.n_days - 1}, "
           f"counting the day the stale model still served, the share is {100 * res['since']['recovered'][0]:.0f}% "
           f"[{100 * res['since']['recovered'][1]:.0f}, {100 * res['since']['recovered'][2]:.0f}], against 45% [35, 54] "
           f"over the same days for the unweighted procedure without the category term (measured before this change, "
           f"when the check caught the shock on day {SHOCK_DAY} itself): the recovery after the retrain is larger, the "
           "total over the period is not, because detection slipped a day. The model the drift meets decides how "
           "often the category is shown, hence how much evidence a day's check has."]
          if meta["after"].start != SHOCK_DAY + 1 else []),
        "",
        *([f"**Below half over the whole period** ({100 * rec[0]:.0f}%). Each retrain trains on the last "
           f"{WINDOW_DAYS:g} days, so the first one, the morning after the shock, has a single day of the new demand "
           "among ten; recency weighting and the category term (below) are meant to close that ramp, and here "
           "they did not close enough of it."] if rec[0] < 0.5 else []),
        "",
        f"How the settings were chosen (validation seed {VALIDATION_SEED}, `python -m bench.drift --seed {VALIDATION_SEED} "
        "--half-life-days H [--no-category-bias] --no-write`; one run each, recovered share over days 13-19 with its CI):",
        "",
        "| item model | no weighting | H = 0.5 | H = 1 | H = 2 | H = 3 | H = 5 | H = 10 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        *[f"| {label} | " + " | ".join(VALIDATION[key].get(h, "-") for h in (None, 0.5, 1, 2, 3, 5, 10)) + " |"
          for key, label in (("plain", "as bench/ab"), ("category_bias", "+ category popularity term"))],
        "",
        "Recency weighting alone helped only at the shortest half-life (47% at 12 hours against 38% unweighted,",
        "within the noise of one run): the item model learns popularity item by item, each item's own term shrunk",
        "toward the catalogue's, and the stale model rarely showed the shocked category, so a day of its",
        "impressions, however heavily weighted, is thin evidence per item. A popularity term per category pools",
        "the category's impressions; alone it did not help (the unweighted window still holds one day of the",
        "new demand in ten); the two together did. The torch",
        "Recommender of `pocketrank retrain` gets the recency weighting (a loss weight per example) but has no",
        "such category term: this bench measures the procedure and the weighting, not that model.",
        "",
        "![drift recovery](drift.png)",
        "",
        "Detection: PSI over the category mix cannot see this drift. The category holds about 2% of",
        "engagement; tripled, about 6%: a PSI near 0.06, under `act` (0.25) however significant (the table).",
        "`check_drift` therefore also compares each category's CTR relative to the window's overall CTR",
        "(`category_ctr`): act when it has doubled or halved and the change is significant (z on the log",
        "ratio, Bonferroni over categories, p < 0.001). It is relative to exposure, so a new model showing",
        "a different mix does not trip it; the mix PSI stays as the signal for shifts in what is engaged with.",
        "The gate ranks each held-out pick among the items shown in its session: on a log the live model",
        "produced, a full ranking favours it (here a model fitted on a superset of the live model's data",
        "scored 12% lower HR@10 by full ranking, and with a full ranking the gate rejected the scheduled retrain).",
        f"Simulator: as above but `n_users` {CONFIG.n_users}, `n_items` {CONFIG.n_items}, `n_days` {CONFIG.n_days}, "
        f"`seed` {CONFIG.seed}; popularity-feed warm-up {WARMUP_DAYS} days.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
