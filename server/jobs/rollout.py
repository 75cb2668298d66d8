"""The canary job: start a rollout, look at its evidence, and promote, widen or roll back.

`pocketrank canary start VERSION --share 0.05` puts a registered candidate in canary; from then on
the server answers users who hash into the share with it (server/online/serving.py). `pocketrank canary
check` (from cron, or every POCKETRANK_CANARY_CHECK_SECONDS inside `pocketrank serve`) is one look:

1. read the events logged since the current stage started (the log position is in the registry,
   so a look reads only the rollout's own tail of the log);
2. build per-user UnitStats with the collector and split them into arms by the same hash that
   routed them (intent to treat: a canary user's events count for the canary whatever path served
   them);
3. apply canary.decide() (delta-method z, Bonferroni over looks; the rule is in server/release/canary.py);
4. act: rollback -> the canary is retired and the live model serves everyone on the next request;
   promote at a stage short of the last -> widen to the next share (POCKETRANK_CANARY_STAGES,
   default 5% -> 25% -> 50%), which starts a new stage, since users between the two shares switch
   arms; promote at the last stage -> the canary becomes live and the store is re-based on it
   (server/jobs/rebase.py: its item vectors, every user state refolded, segment vectors, the store's
   current_model); continue -> nothing.

Every look is logged (the logger and the registry's rollout record) with its figures. A look with
fewer than two users in either arm is not counted: no test could fire on it, so it spends none of
the Bonferroni budget.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pocketrank.shared.errors import ValidationError

from ..config import STAGES
from ..monitoring import collector, source
from ..online.versions import ensure_vectors
from ..release import canary
from ..release.registry import Registry

log = logging.getLogger(__name__)


def start(root: Path | str, store: Any, version: str, share: float) -> dict:
    """Start a canary of a registered candidate. The first time, the store's current model is
    registered as live, so there is a control arm to compare against."""
    reg = Registry(root)
    model_dir = Path(root) / "models" / version
    if not (model_dir / "ranker.fp32.onnx").exists():
        raise ValidationError("version", f"{model_dir} has no ranker.fp32.onnx; export the model first")
    if reg.live() is None:
        current = store.get_meta("current_model")
        if current and current not in reg.versions():
            reg.register(current, lineage={"note": "the store's model, registered live at the first rollout"},
                         state="live")
    if reg.live() is None:
        raise ValidationError("version", "no live model to compare against; train one first")
    reg.get(version)  # registered, or a clear error before any file is written
    ensure_vectors(model_dir)
    ro = reg.start_canary(version, share, log_position=source.log_head(store))
    # Devices too: the current bundle's canary variant, so canary users' devices get the canary on their
    # next sync rather than at the next publish (server/bundle/variants.py; a failure is reported, not raised).
    from ..bundle.variants import build_for_rollout
    from ..home import Home

    built = build_for_rollout(Home(Path(root)), int(store.get_meta("bundle_version", "0") or 0), ro, store=store)
    if built is not None:
        ro = {**ro, "device_variant": built}
    log.info("canary %s started: %s to %.1f%% of users against %s", ro["rollout_id"], version, 100 * share,
             ro["control"])
    return ro


def start_shadow(root: Path | str, store: Any, version: str, sample: float) -> dict:
    """Shadow a registered candidate on the personal requests of `sample` of users (see server/release/shadow.py)."""
    reg = Registry(root)
    model_dir = Path(root) / "models" / version
    reg.get(version)
    if not (model_dir / "ranker.fp32.onnx").exists():
        raise ValidationError("version", f"{model_dir} has no ranker.fp32.onnx; export the model first")
    ensure_vectors(model_dir)
    return reg.start_shadow(version, sample, source.log_head(store))


def check(root: Path | str, store: Any, rule: canary.Rule = canary.Rule(),
          stages: tuple[float, ...] = STAGES, profiles: Callable[[], Any] | str | None = None,
          progress: bool = False) -> dict | None:
    """One look at the running rollout; None when no canary is running. Returns what was done.

    On a promotion the store is re-based on the promoted version; `profiles` returns the user
    profiles its segment vectors are recomputed from (None: segments are cleared). A re-base that
    fails leaves the old store intact and the promotion standing (serving already ranks with the
    live version from its own vectors): the result carries the error under "rebase", and
    `pocketrank rebase VERSION` finishes it."""
    reg = Registry(root)
    ro = reg.rollout()
    if not ro:
        return None
    events = source.events_after(store, ro.get("stage_from", 0))
    units = collector.per_user(events)
    control, arm = canary.split_units(units, ro["rollout_id"], ro["share"])
    base = {"rollout_id": ro["rollout_id"], "version": ro["version"], "control": ro["control"],
            "share": ro["share"], "events": len(events)}
    if min(control.ctr.users, arm.ctr.users) < 2:
        log.info("canary %s: waiting for users in both arms (control %d, canary %d); not a look",
                 ro["rollout_id"], control.ctr.users, arm.ctr.users)
        return {**base, "action": "wait", "decision": None}
    look = 1 + sum(1 for d in ro["decisions"] if "look" in d)
    d = canary.decide(control, arm, look, rule)
    figures = d.to_dict()
    version, action = ro["version"], d.action
    if d.action == "rollback":
        reg.record_decision(figures)
        reg.rollback(version, d.reason)
    elif d.action == "promote":
        wider = [s for s in stages if s > ro["share"]]
        if wider:
            action = "widen"
            figures = {**figures, "action": "widen", "to_share": wider[0]}
            reg.record_decision(figures, share=wider[0], log_position=source.log_head(store))
        else:
            reg.record_decision(figures)
            reg.promote(version, d.reason)
            base["rebase"] = _rebase(root, store, version, profiles, progress)
    else:
        reg.record_decision(figures)
    (log.warning if action == "rollback" else log.info)(
        "canary %s look %d: %s (%s); CTR %.4f vs %.4f z=%.2f, bounce %.4f vs %.4f z=%.2f, z_crit %.2f, "
        "users %d/%d", ro["rollout_id"], look, action, d.reason, d.ctr_canary, d.ctr_control, d.z_ctr,
        d.bounce_canary, d.bounce_control, d.z_bounce, d.z_crit, d.users_canary, d.users_control)
    return {**base, "action": action, "decision": figures}


def _rebase(root: Path | str, store: Any, version: str, profiles: Callable[[], Any] | str | None,
            progress: bool) -> dict:
    from .rebase import load_profiles, rebase

    try:
        prof = load_profiles(profiles, store) if isinstance(profiles, str) else profiles() if profiles else None
        return rebase(root, store, version, prof, progress=progress)
    except Exception as exc:  # noqa: BLE001 - the promotion stands; the error is reported, rerun by hand
        log.exception("re-basing the store on %s failed; run `pocketrank rebase %s`", version, version)
        return {"model_version": version, "status": "failed", "error": f"{type(exc).__name__}: {exc}"}


def status(root: Path | str) -> dict:
    """The running rollout (with its looks), the last finished ones, the shadow and every version's state."""
    data = Registry(root).load()
    return {"rollout": data["rollout"], "finished": data["rollouts"][-5:], "shadow": data["shadow"],
            "versions": {v: rec["state"] for v, rec in sorted(data["versions"].items())}}


class Watcher:
    """Runs `check` every `seconds` on its own store connection, until stopped (inside `pocketrank serve`)."""

    def __init__(self, config, seconds: float, stages: tuple[float, ...],
                 profiles: Callable[[], Any] | str | None = "store"):
        # The profiles a promotion's re-base recomputes segment vectors from: by default the users'
        # attributes imported into the store, the default of `pocketrank features` too.
        self.config, self.seconds, self.stages, self.profiles = config, seconds, stages, profiles
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="pocketrank-canary", daemon=True)

    def start(self) -> Watcher:
        self.thread.start()
        return self

    def _run(self) -> None:
        from ..stores import open_store

        store = open_store(self.config)
        try:
            while not self.stop.wait(self.seconds):
                try:
                    check(self.config.home, store, stages=self.stages, profiles=self.profiles)
                except Exception:  # noqa: BLE001 - a failed look is logged; the next one tries again
                    log.exception("canary check failed")
        finally:
            store.close()
