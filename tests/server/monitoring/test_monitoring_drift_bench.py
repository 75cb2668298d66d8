"""bench/drift's options: the drift check cadence, the shocked category's rule, and how it names the moments it checks."""

from __future__ import annotations

import pytest

from bench import drift as bench_drift
from pocketrank.shared.errors import ValidationError


@pytest.mark.parametrize("hours", ["0", "-6", "25"])
def test_a_cadence_outside_the_window_is_refused_before_any_work(hours):
    with pytest.raises(SystemExit, match="--check-hours must be in"):
        bench_drift.main(["--check-hours", hours, "--no-write"])


def test_the_cadence_option_parses_and_defaults_to_six_hours():
    assert bench_drift.parse([]).check_hours is None and bench_drift.CHECK_HOURS == 6.0
    assert bench_drift.parse(["--check-hours", "24"]).check_hours == 24.0


def test_check_times_are_named_in_simulated_days_and_hours():
    assert bench_drift._when(12.75) == "day 12 18:00"
    assert bench_drift._when(13.0) == "day 13 00:00"
    assert bench_drift._when(12 + 1 / 24 / 2) == "day 12 00:30"


# --- which category the shock triples: picked from a warm-up's engagement, never from outcomes ---

def _tiny_warmup():
    """Five categories with 1, 3, 5, 7, 9 engagements (Books 1 ... Garden 9) and impressions that would
    rank them the other way round, so a rule that counted impressions would pick differently."""
    from pocketrank.server.monitoring import drift
    from pocketrank.shared.schemas import Event

    cats = ["Books", "Toys", "Pets", "Sports", "Garden"]
    item_category = {i: c for i, c in enumerate(cats)}
    events, n = [], 0
    for i, _c in enumerate(cats):
        for etype, count in (("click", 2 * i + 1), ("impression", 50 - 10 * i)):
            for _ in range(count):
                events.append(Event(f"e{n}", "u1", "sim", etype, 1.7e9 + n, i))
                n += 1
    return drift.category_mix(events, item_category), cats


def test_the_least_rule_picks_the_least_engaged_category():
    mix, cats = _tiny_warmup()
    assert bench_drift.pick_category("least", mix, cats) == "Books"


def test_the_median_rule_picks_the_median_and_the_lower_one_of_an_even_count():
    mix, cats = _tiny_warmup()
    assert bench_drift.pick_category("median", mix, cats) == "Pets"  # 1, 3, [5], 7, 9
    assert bench_drift.pick_category("median", mix, cats[:4]) == "Toys"  # 1, [3], 5, 7


def test_ties_and_categories_without_engagement_are_ordered_by_name():
    cats = ["Toys", "Books", "Pets"]
    assert bench_drift.pick_category("least", {"Toys": 2, "Pets": 2}, cats) == "Books"  # 0 engagements
    assert bench_drift.pick_category("median", {"Toys": 2, "Pets": 2}, cats) == "Pets"  # Books 0, [Pets 2], Toys 2


def test_a_category_name_is_taken_as_it_is_and_an_unknown_one_is_refused():
    mix, cats = _tiny_warmup()
    assert bench_drift.pick_category("Sports", mix, cats) == "Sports"
    with pytest.raises(ValidationError, match="neither a rule"):
        bench_drift.pick_category("Spaceships", mix, cats)


def test_an_unknown_shock_category_is_refused_before_any_work():
    with pytest.raises(SystemExit, match="--shock-category: 'Spaceships' is neither"):
        bench_drift.main(["--shock-category", "Spaceships", "--no-write"])


def test_one_scenario_cannot_rewrite_the_docs_that_report_both():
    with pytest.raises(SystemExit, match="the docs report both scenarios"):
        bench_drift.main(["--shock-category", "median"])


def test_a_check_runs_only_once_its_window_is_past_the_live_models_training_data():
    """The bench's skip rule is the job's (retrain.overlaps): after a retrain at t, the 6-hourly checks at
    t + 6, 12 and 18 h would overlap its window (the trailing 24 h); the first to run is at t + 24 h."""
    from pocketrank.server.jobs import retrain

    policy = bench_drift.ServingPolicy(None, [], {}, [], watch_drift=True)
    t = bench_drift.CONFIG.start_time + 10 * bench_drift.DAY
    assert not policy._allowed(t + bench_drift.DAY)  # no live training window yet: nothing to compare with
    policy.reference, policy.trained = [], (t - bench_drift.WINDOW_DAYS * bench_drift.DAY, t)  # as _retrain sets them
    hours = [6, 12, 18, 24, 30]
    assert [policy._allowed(t + h * 3600.0) for h in hours] == [False, False, False, True, True]
    assert [policy._allowed(t + h * 3600.0) for h in hours] == [
        not retrain.overlaps(policy.trained, (t + (h - bench_drift.CURRENT_HOURS) * 3600.0, t + h * 3600.0)) for h in hours]
