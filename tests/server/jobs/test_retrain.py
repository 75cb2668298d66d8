"""`pocketrank retrain` on a small simulated home: gated candidates, rejections, drift-triggered runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from lab.simulate import FeedbackSimulator
from lab.simulator import CATEGORIES, SimConfig
from pocketrank.cli import main as cli
from pocketrank.server.home import Home
from pocketrank.server.jobs import retrain
from pocketrank.server.online.encoding import model_kind
from pocketrank.server.release.registry import Registry
from pocketrank.shared.errors import ValidationError
from pocketrank.shared.schemas import Event
from tests.factories import product

pytestmark = pytest.mark.slow  # see `make test-fast`

CFG = SimConfig(n_users=1500, n_items=400, n_categories=6, n_days=6, seed=4)
SHOCKED = 2  # the category whose popularity triples on the last day


def _log(shock: bool) -> tuple[list, list]:
    sim = FeedbackSimulator(CFG, shock=(CFG.n_days - 1, SHOCKED, 3.0) if shock else None)
    return sim.items, [e for s in sim.sessions() for e in s]


def _taste_log(n_users: int = 250, n_items: int = 120, n_cats: int = 6, picks: int = 14, seed: int = 0):
    """Users who pick products from their one favourite category, a pick every ~16 hours: a log the
    model can learn in a couple of epochs (the simulator's popularity-feed logs teach it little;
    bench/drift runs the gated retrain on those with the simulator's own item model)."""
    rng = np.random.default_rng(seed)
    cats = [CATEGORIES[c] for c in range(n_cats)]
    items = [product(i, cats[i % n_cats]) for i in range(1, n_items + 1)]
    t0, events = 1_700_000_000.0, []
    for u in range(n_users):
        fav = rng.integers(n_cats)
        pool = [it.item_id for it in items if it.item_id % n_cats == fav]
        chosen = rng.choice(pool, size=picks, replace=False)
        for n, item in enumerate(chosen.tolist()):
            t = t0 + n * 57_600 + rng.uniform(0, 3_600)
            events.append(Event(f"t{u}-{n}", f"u{u}", "d", "click", t, int(item), session_id=f"s{u}-{n}"))
    return items, sorted(events, key=lambda e: e.timestamp)


@pytest.fixture(scope="module")
def logs():
    return {"calm": _log(False), "shock": _log(True), "taste": _taste_log()}


def _home(tmp_path, logs, which="calm") -> Home:
    home = Home(tmp_path / which)
    items, events = logs[which]
    store = home.store()
    store.put_items(items)
    store.import_events(events)
    return home


def _make_live(home: Home, version: str) -> None:
    reg = Registry(home.root)
    reg.start_canary(version, share=0.05)
    reg.promote(version, reason="test")


def test_retrain_registers_a_candidate_with_metrics_and_lineage(tmp_path, logs):
    home = _home(tmp_path, logs, "taste")
    rec = retrain.retrain_job(home, window_days=10, epochs=5, progress=False)
    assert rec["status"] == "candidate" and rec["state"] == "candidate"
    assert Registry(home.root).get(rec["version"])["state"] == "candidate"
    # no live model: the sequence model, saved where serving, export and rebase read a version
    assert rec["lineage"]["kind"] == "sequence" and model_kind(home.model_dir(rec["version"])) == "sequence"
    assert {"encoder.onnx", "encoder.fp32.onnx", "item_vectors.npz", "content.npz"} <= {
        p.name for p in home.model_dir(rec["version"]).iterdir()}
    lin, met = rec["lineage"], rec["metrics"]
    events = logs["taste"][1]
    assert lin["parent"] is None and lin["events_in_window"] == len(events)
    assert lin["window"][1] == max(e.timestamp for e in events)
    assert lin["window"][1] - lin["window"][0] == pytest.approx(10 * 86_400)
    assert lin["holdout_users"] == lin["users"] == 250 and lin["held_out_events"] == 250
    assert lin["train_events"] + lin["held_out_events"] == len(events)
    cand = met["holdout"]["candidate"]
    assert cand["users"] == 250 and 0 < cand["nDCG@10"] < cand["HR@10"] and cand["HR@10"] > 0.5  # random: ~0.09
    assert met["gates"]["accuracy"]["passed"] and "no live model" in met["gates"]["accuracy"]["reasons"][0]
    assert all(g["passed"] for g in met["gates"]["parity"]["ranker"]["gates"].values())
    assert (home.model_dir(rec["version"]) / "ranker.int8.onnx").stat().st_size > 0

    # the same run again, through the CLI: nothing new, nothing done (safe under cron)
    out = CliRunner().invoke(cli, ["retrain", "--home", str(home.root), "--window-days", "10", "--epochs", "5"])
    assert out.exit_code == 0, out.output
    assert "already trained on this window" in out.output
    assert len(Registry(home.root).versions()) == 1

    # with it live, a new run is gated against it on the same hold-out and names it as parent
    _make_live(home, rec["version"])
    again = retrain.retrain_job(home, window_days=10, epochs=5, seed=7, progress=False)
    assert again["lineage"]["parent"] == rec["version"]
    live = again["metrics"]["holdout"]["live"]
    assert live["users"] == again["metrics"]["holdout"]["candidate"]["users"] and live["nDCG@10"] > 0
    checks = again["metrics"]["gates"]["accuracy"]["checks"]
    assert set(checks) == {"HR@10", "nDCG@10"} and checks["nDCG@10"]["floor"] == pytest.approx(0.95 * live["nDCG@10"])


def test_a_failed_gate_registers_the_model_as_rejected_with_the_reason(tmp_path, logs):
    home = _home(tmp_path, logs, "taste")
    first = retrain.retrain_job(home, window_days=10, epochs=5, progress=False)
    _make_live(home, first["version"])
    # an untrained candidate (0 epochs: random vectors) is far worse than the live model
    rec = retrain.retrain_job(home, window_days=10, epochs=0, progress=False)
    assert rec["status"] == "rejected" and rec["state"] == "retired"
    assert rec["retired_reason"].startswith("rejected: ") and "nDCG@10" in rec["retired_reason"]
    stored = Registry(home.root).get(rec["version"])
    assert stored["state"] == "retired" and not stored["metrics"]["gates"]["accuracy"]["passed"]
    assert stored["metrics"]["gates"]["parity"] == "not run"  # the accuracy gate failed first
    assert stored["lineage"]["parent"] == first["version"]
    assert Registry(home.root).live() == first["version"]  # the live model is untouched
    assert any(h["event"].startswith("rejected") for h in Registry(home.root).load()["history"])


def test_bad_options_get_a_clear_error(tmp_path, logs):
    home = _home(tmp_path, logs)
    out = CliRunner().invoke(cli, ["retrain", "--home", str(home.root), "--window-days", "0"])
    assert out.exit_code == 2 and "window-days" in out.output
    empty = Home(tmp_path / "empty")
    out = CliRunner().invoke(cli, ["retrain", "--home", str(empty.root)])
    assert out.exit_code == 1 and "event log is empty" in out.output


def test_drift_triggered_retrain_does_nothing_without_drift(tmp_path, logs):
    home = _home(tmp_path, logs, "calm")
    out = retrain.retrain_if_drift(home, current_days=1, window_days=10, epochs=1, progress=False)
    assert out["retrained"] is None and not out["drift"]["retrain"]
    assert Registry(home.root).versions() == {}
    log = [json.loads(x) for x in (home.root / "drift_log.jsonl").read_text().splitlines()]
    assert len(log) == 1 and log[0]["action"] == "none"
    fig = log[0]["decision"]["figures"][0]
    assert fig["name"] == "category_mix" and fig["n_current"] > 300 and fig["level"] == "ok"


def test_drift_triggered_retrain_runs_when_a_category_is_tripled(tmp_path, logs):
    home = _home(tmp_path, logs, "shock")
    out = CliRunner().invoke(cli, ["retrain", "--home", str(home.root), "--if-drift", "--window-days", "10",
                                   "--epochs", "1"])
    assert out.exit_code == 0, out.output
    assert "drift: act" in out.output and "category_mix" in out.output
    (version,) = Registry(home.root).versions()
    rec = Registry(home.root).get(version)
    assert rec["lineage"]["trigger"]["kind"] == "drift" and rec["lineage"]["trigger"]["reasons"]
    log = [json.loads(x) for x in (home.root / "drift_log.jsonl").read_text().splitlines()]
    assert log[-1]["action"] == "retrain" and log[-1]["version"] == version
    top = log[-1]["decision"]["figures"][0]["top_shifts"][0]
    assert top["value"] == CATEGORIES[SHOCKED] and top["current_share"] > 2 * top["reference_share"]
    # The next run (a 6-hourly cron's) retrains no second time on the drift that candidate learnt:
    # while it waits for its canary, and once it is live (its training window covers the current day).
    for expect in ("is a candidate; its canary decides", "skipped: the live model"):
        if expect.startswith("skipped: the live"):
            _make_live(home, version)
        again = CliRunner().invoke(cli, ["retrain", "--home", str(home.root), "--if-drift", "--window-days", "10",
                                         "--epochs", "1"])
        assert again.exit_code == 0, again.output
        assert expect in again.output and "no retrain" in again.output
        assert list(Registry(home.root).versions()) == [version]
        log = [json.loads(x) for x in (home.root / "drift_log.jsonl").read_text().splitlines()]
        assert log[-1]["action"] == "skipped" and log[-1]["decision"]["figures"] == []


def test_the_drift_check_never_compares_a_window_the_live_model_was_trained_on():
    lineage = {"lineage": {"window": [0.0, 10 * retrain.DAY]}}
    ref, cur = retrain.drift_windows(11 * retrain.DAY, 1.0, 30.0, lineage)
    assert ref == (0.0, 10 * retrain.DAY) and cur == (10 * retrain.DAY, 11 * retrain.DAY)
    assert not retrain.overlaps(lineage["lineage"]["window"], cur)  # a full window after the retrain's data
    _, cur = retrain.drift_windows(10.75 * retrain.DAY, 1.0, 30.0, lineage)  # 6 h after the retrain's data
    assert cur == (9.75 * retrain.DAY, 10.75 * retrain.DAY) and retrain.overlaps(lineage["lineage"]["window"], cur)
    assert not retrain.overlaps(None, cur) and not retrain.overlaps([], cur)  # no recorded window
    ref, _ = retrain.drift_windows(11 * retrain.DAY, 1.0, 30.0, {})  # no lineage: the days before
    assert ref == (-20 * retrain.DAY, 10 * retrain.DAY)


def test_the_drift_check_reads_the_registry_once_and_skips_only_for_live_or_pending_drift_models(tmp_path, logs,
                                                                                                 monkeypatch):
    home = _home(tmp_path, logs, "calm")
    end = max(e.timestamp for e in logs["calm"][1])
    old, recent = [end - 5 * retrain.DAY, end - 2 * retrain.DAY], [end - 5 * retrain.DAY, end]
    drift_trigger = {"kind": "drift"}
    reg = Registry(home.root)
    reg.register("a-live", lineage={"window": old}, state="live")
    reg.register("b-manual", lineage={"window": recent, "trigger": {"kind": "manual"}})  # not a drift retrain
    reg.register("c-rejected", lineage={"window": recent, "trigger": drift_trigger})
    reg.reject("c-rejected", "gate")
    reads = []
    load = Registry.load
    monkeypatch.setattr(Registry, "load", lambda self: reads.append(1) or load(self))

    decision, skipped = retrain.drift_check(home, current_days=1, window_days=10)
    ref = decision.reference_window  # the events seen in the live model's window (the days before would reach end - 1 day)
    assert not skipped and decision.figures and old[0] <= ref[0] < ref[1] <= old[1]
    assert len(reads) == 1
    assert [v for v, _ in retrain.windows_to_wait_for(Registry(home.root).versions(), "a-live")] == ["a-live"]

    reg.register("d-drift", lineage={"window": recent, "trigger": drift_trigger})
    reg.start_canary("d-drift", share=0.05)
    decision, skipped = retrain.drift_check(home, current_days=1, window_days=10)
    assert skipped and decision.figures == [] and not decision.retrain
    assert decision.reasons[0].startswith("skipped: d-drift, trained on this drift") and "is a canary" in decision.reasons[0]

    reg.promote("d-drift", reason="test")  # live now: the live model's reason, named once
    assert [v for v, _ in retrain.windows_to_wait_for(Registry(home.root).versions(), "d-drift")] == ["d-drift"]
    decision, skipped = retrain.drift_check(home, current_days=1, window_days=10)
    assert skipped and decision.reasons[0].startswith("skipped: the live model d-drift was trained on events up to")


def test_a_second_run_while_one_holds_the_lock_is_refused(tmp_path, logs):
    from pocketrank.shared.errors import ModelError

    home = _home(tmp_path, logs, "taste")
    with retrain.job_lock(home.root):
        with pytest.raises(ModelError, match="another retrain is running"):
            retrain.retrain_job(home, window_days=10, epochs=1, progress=False)
    assert Registry(home.root).versions() == {}


def test_recency_weights_halve_every_half_life():
    from pocketrank.server.release.holdout import recency_weights

    end = 1_700_000_000.0
    evs = [Event(f"e{d}", "u", "d", "click", end - d * 86_400, 1) for d in (0, 1, 2, 4)]
    assert recency_weights(evs, end, 2.0).tolist() == pytest.approx([1.0, 0.5 ** 0.5, 0.5, 0.25])
    assert recency_weights(evs, end, None) is None
    with pytest.raises(ValidationError, match="half_life_days"):
        recency_weights(evs, end, -1.0)


@pytest.mark.parametrize("category_bias", [False, True])
def test_a_short_half_life_moves_the_retrained_model_further_toward_a_recent_shift(logs, category_bias):
    """The shocked category's products (3x as popular on the last day) gain more learned popularity
    over the rest when the last day weighs more: the bench's item model, weighted as gated_retrain does
    (bench/drift fits it with a popularity term per category; bench/ab without)."""
    from lab.simulate import fit_item_model
    from pocketrank.server.release.holdout import recency_weights

    items, events = logs["shock"]
    cats = {it.item_id: CATEGORIES.index(it.category) for it in items}
    ids = np.array(sorted(cats))
    shocked = np.array([cats[i] == SHOCKED for i in ids])
    end = max(e.timestamp for e in events)

    def lift(half_life):
        m = fit_item_model(events, cats, CFG.n_categories, steps=80, weights=recency_weights(events, end, half_life),
                           category_bias=category_bias)
        return float(m.bias[ids][shocked].mean() - m.bias[ids][~shocked].mean())

    none, day = lift(None), lift(0.5)
    assert day > none + 0.04, (day, none)  # measured: 0.27 against 0.20; with the category term 0.62 against 0.49
    assert lift(1e6) == pytest.approx(none, abs=1e-3)  # a very long half-life is no weighting


def test_the_cli_takes_a_half_life_and_records_it(tmp_path, logs):
    home = _home(tmp_path, logs, "taste")
    out = CliRunner().invoke(cli, ["retrain", "--home", str(home.root), "--window-days", "10", "--epochs", "3",
                                   "--half-life-days", "2"])
    assert out.exit_code == 1 and "fold model" in out.output  # the sequence model weighs recency itself
    out = CliRunner().invoke(cli, ["retrain", "--home", str(home.root), "--window-days", "10", "--epochs", "3",
                                   "--half-life-days", "2", "--model", "fold"])
    assert out.exit_code == 0, out.output
    (version,) = Registry(home.root).versions()
    lin = Registry(home.root).get(version)["lineage"]
    events = logs["taste"][1]
    assert lin["half_life_days"] == 2.0 and lin["train_weight"] < 0.5 * lin["train_events"]  # picks span ~9 days
    # 0 turns weighting off: a different setting, so a new version rather than "already trained"
    out = CliRunner().invoke(cli, ["retrain", "--home", str(home.root), "--window-days", "10", "--epochs", "3",
                                   "--half-life-days", "0", "--model", "fold"])
    assert out.exit_code == 0, out.output
    assert "already trained" not in out.output
    assert len(Registry(home.root).versions()) == 2
    off = [r for v, r in Registry(home.root).versions().items() if v != version][0]
    assert off["lineage"]["half_life_days"] is None and off["lineage"]["train_weight"] == len(events) - 250
    out = CliRunner().invoke(cli, ["retrain", "--home", str(home.root), "--half-life-days", "-1"])
    assert out.exit_code == 2 and "half-life-days" in out.output


def test_a_live_fold_model_is_retrained_as_a_fold_model_and_gated_against_it(tmp_path, logs):
    home = _home(tmp_path, logs, "taste")
    first = retrain.retrain_job(home, window_days=10, epochs=5, progress=False, kind="fold")
    assert first["status"] == "candidate", first.get("retired_reason")
    assert first["lineage"]["kind"] == "fold" and model_kind(home.model_dir(first["version"])) == "fold"
    _make_live(home, first["version"])
    again = retrain.retrain_job(home, window_days=10, epochs=5, seed=7, progress=False)
    assert again["lineage"]["kind"] == "fold" and again["lineage"]["parent"] == first["version"]
    # a sequence candidate against the live fold model: both ranked on the same hold-out
    seq = retrain.retrain_job(home, window_days=10, epochs=5, seed=8, progress=False, kind="sequence")
    h = seq["metrics"]["holdout"]
    assert seq["lineage"]["kind"] == "sequence" and h["live"]["users"] == h["candidate"]["users"] == 250


def test_a_sequence_retrain_keeps_the_live_models_recipe(tmp_path, logs):
    """A model trained with its own settings and budget is retrained with them, not at the defaults; --epochs
    replaces the budget alone."""
    import json as _json

    from pocketrank.server.jobs.sequence import train_sequence_job

    home = _home(tmp_path, logs, "taste")
    recipe = {"dim": 32, "lr": 3e-3, "lr_schedule": "linear", "dropout": 0.2}
    train_sequence_job(home, epochs=3, seed=1, progress=False, settings=recipe)

    def config(rec):
        return _json.loads((home.model_dir(rec["version"]) / "config.json").read_text())["config"]

    first = retrain.retrain_job(home, window_days=10, progress=False)
    same = config(first)
    assert {k: same[k] for k in recipe} == recipe and same["epochs"] == 3  # a linear budget carries its epochs
    capped = retrain.retrain_job(home, window_days=10, epochs=2, progress=False)  # saved, gated in or out
    assert capped["version"] != first["version"]  # another setting, another version
    got = config(capped)
    assert {k: got[k] for k in recipe} == recipe and got["epochs"] == 2
    assert got["n_items"] == same["n_items"] and got["seed"] == 42  # the run's own, not the live model's


def test_the_recipe_is_what_differs_from_the_defaults_and_a_budget_only_under_a_linear_rate():
    import torch

    from pocketrank.server.jobs.sequence_retrain import SequenceCandidate, live_recipe
    from pocketrank.server.training.seqmodel import SeqConfig, SequenceRecommender

    def live(**kw):
        torch.manual_seed(0)
        model = SequenceRecommender(SeqConfig(n_items=5, n_tokens=0, seed=3, **kw)).eval()
        return SequenceCandidate(model, np.arange(1, 6))

    assert live_recipe(live()) == {}  # the defaults: nothing to carry, the version names stay as they were
    assert live_recipe(live(dropout=0.2, epochs=2)) == {"dropout": 0.2}  # a constant rate's epochs were a cap
    assert live_recipe(live(lr_schedule="linear", epochs=16, lr=4e-3)) == {"lr_schedule": "linear", "epochs": 16,
                                                                          "lr": 4e-3}
    assert live_recipe(None) == {}
