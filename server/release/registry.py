"""The model registry: versions with their metrics, lineage and state, in `<home>/registry.json`.

States: candidate (trained, gated, not served) -> canary (served to a share of users) -> live
(served to everyone) -> retired. A rollback sends a canary back to candidate-rejected (`retired`
with the reason). At most one version is live and at most one is in canary; promoting a canary
retires the previous live version. The file is rewritten atomically (temp file + rename), and a
process-local lock serialises writers; one server process, or one job at a time, writes it.

A candidate may also be in shadow: it scores a sample of requests beside the served model and is
never served (server/release/shadow.py); that is a separate record, not a state, so a version
can be shadowed and later canaried. A finished rollout (promoted or rolled back) moves, with all
its logged decisions, to `rollouts`, so the record of why stays after the canary is gone.

Servers read the file on every request only when its mtime changed (Serving.routing), and route a
user with `route(data, user_id)`: the same function `model_for` uses, so the server and the sync
manifest agree on who gets which model.

    reg = Registry(home.root)
    reg.register("m2", metrics={"hr@10": 0.11}, lineage={"parent": "m1", "data_window": [t0, t1]})
    reg.start_canary("m2", share=0.05)          # -> rollout id "m2-canary-1"
    reg.promote("m2") / reg.rollback("m2", reason="CTR z=-4.1")
    reg.start_shadow("m3", sample=0.1) / reg.stop_shadow()
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from pocketrank.shared.errors import ValidationError

from .canary import in_canary

STATES = ("candidate", "canary", "live", "retired")
_LOCK = threading.Lock()


class Registry:
    def __init__(self, root: Path | str):
        self.path = Path(root) / "registry.json"

    def load(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            data = {}
        data.setdefault("versions", {})
        data.setdefault("rollout", None)
        data.setdefault("history", [])
        data.setdefault("rollouts", [])
        data.setdefault("shadow", None)
        return data

    def _save(self, data: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, self.path)

    def _change(self, fn) -> dict:
        with _LOCK:
            data = self.load()
            out = fn(data)
            self._save(data)
            return out

    # --- reads ---

    def versions(self) -> dict:
        return self.load()["versions"]

    def get(self, version: str) -> dict:
        v = self.versions().get(version)
        if v is None:
            raise ValidationError("version", f"{version!r} is not registered; register it first")
        return v

    def in_state(self, state: str) -> list[str]:
        return sorted(k for k, v in self.versions().items() if v["state"] == state)

    def live(self) -> str | None:
        live = self.in_state("live")
        return live[0] if live else None

    def rollout(self) -> dict | None:
        return self.load()["rollout"]

    # --- writes ---

    def register(self, version: str, metrics: dict | None = None, lineage: dict | None = None,
                 state: str = "candidate") -> dict:
        if state not in ("candidate", "live"):
            raise ValidationError("state", "a new version starts as candidate (or live, for the first model)")

        def fn(data: dict) -> dict:
            if version in data["versions"]:
                raise ValidationError("version", f"{version!r} is already registered")
            if state == "live":
                self._retire_live(data)
            rec = {"version": version, "state": state, "metrics": metrics or {}, "lineage": lineage or {},
                   "created_at": time.time(), "updated_at": time.time()}
            data["versions"][version] = rec
            data["history"].append({"at": time.time(), "version": version, "event": f"registered as {state}"})
            return rec

        return self._change(fn)

    @staticmethod
    def _retire_live(data: dict) -> None:
        for rec in data["versions"].values():
            if rec["state"] == "live":
                rec["state"], rec["updated_at"] = "retired", time.time()

    def _require(self, data: dict, version: str, state: str) -> dict:
        rec = data["versions"].get(version)
        if rec is None:
            raise ValidationError("version", f"{version!r} is not registered")
        if rec["state"] != state:
            raise ValidationError("version", f"{version!r} is {rec['state']}, not {state}")
        return rec

    def shadow(self) -> dict | None:
        return self.load()["shadow"]

    def start_canary(self, version: str, share: float, log_position: int = 0) -> dict:
        """Serve `version` to `share` of users; `log_position` is the event log's head now, where
        the rollout's evidence starts (server/monitoring/source.log_head)."""
        if not 0 < share < 1:
            raise ValidationError("share", "must be between 0 and 1 (exclusive)")

        def fn(data: dict) -> dict:
            rec = self._require(data, version, "candidate")
            if data["rollout"]:
                raise ValidationError("version", f"{data['rollout']['version']} is already in canary")
            n = sum(1 for h in data["history"] if h["version"] == version and h["event"].startswith("canary"))
            rec["state"], rec["updated_at"] = "canary", time.time()
            data["rollout"] = {"rollout_id": f"{version}-canary-{n + 1}", "version": version, "share": share,
                               "control": self.live_of(data),
                               "started_at": time.time(), "decisions": [],
                               "stage_started_at": time.time(), "stage_from": int(log_position)}
            data["history"].append({"at": time.time(), "version": version, "event": f"canary at {share:.0%}"})
            return data["rollout"]

        return self._change(fn)

    def record_decision(self, decision: dict, share: float | None = None, log_position: int | None = None) -> dict:
        """Log a canary decision (with its figures); optionally widen the share.

        Widening starts a new stage at `log_position`: users between the old and the new share
        switch arms, so the evidence before it no longer splits by the new share."""

        def fn(data: dict) -> dict:
            ro = data["rollout"]
            if not ro:
                raise ValidationError("rollout", "no canary is running")
            ro["decisions"].append({"at": time.time(), **decision})
            if share is not None:
                if share < ro["share"]:
                    raise ValidationError("share", "a canary only widens; roll back to narrow it")
                if share >= 1:
                    raise ValidationError("share", "must stay below 1; promote the canary to serve everyone")
                if share > ro["share"]:
                    ro["stage_started_at"] = time.time()
                    if log_position is not None:
                        ro["stage_from"] = int(log_position)
                    data["history"].append({"at": time.time(), "version": ro["version"],
                                            "event": f"canary widened to {share:.0%}"})
                ro["share"] = share
            return ro

        return self._change(fn)

    def promote(self, version: str, reason: str = "") -> dict:
        def fn(data: dict) -> dict:
            rec = self._require(data, version, "canary")
            self._retire_live(data)
            rec["state"], rec["updated_at"] = "live", time.time()
            self._finish(data, "promoted", reason)
            data["history"].append({"at": time.time(), "version": version, "event": f"promoted: {reason}"})
            return rec

        return self._change(fn)

    def rollback(self, version: str, reason: str = "") -> dict:
        def fn(data: dict) -> dict:
            rec = self._require(data, version, "canary")
            rec["state"], rec["updated_at"] = "retired", time.time()
            rec["retired_reason"] = f"rolled back: {reason}"
            self._finish(data, "rolled back", reason)
            data["history"].append({"at": time.time(), "version": version, "event": f"rolled back: {reason}"})
            return rec

        return self._change(fn)

    def reject(self, version: str, reason: str) -> dict:
        """A candidate that failed its gates: retired with the reason, kept on record (pocketrank retrain)."""

        def fn(data: dict) -> dict:
            rec = self._require(data, version, "candidate")
            rec["state"], rec["updated_at"] = "retired", time.time()
            rec["retired_reason"] = f"rejected: {reason}"
            data["history"].append({"at": time.time(), "version": version, "event": f"rejected: {reason}"})
            return rec

        return self._change(fn)

    @staticmethod
    def _finish(data: dict, outcome: str, reason: str) -> None:
        ro = data["rollout"]
        if ro:
            data["rollouts"].append({**ro, "outcome": outcome, "reason": reason, "ended_at": time.time()})
        data["rollout"] = None

    def start_shadow(self, version: str, sample: float, log_position: int = 0) -> dict:
        """Rank the requests of `sample` of users with `version` too, never serving it (replaces any shadow)."""
        if not 0 < sample <= 1:
            raise ValidationError("sample", "must be in (0, 1]")

        def fn(data: dict) -> dict:
            rec = data["versions"].get(version)
            if rec is None:
                raise ValidationError("version", f"{version!r} is not registered; register it first")
            if rec["state"] not in ("candidate", "canary"):
                raise ValidationError("version", f"{version!r} is {rec['state']}; "
                                                 "only a candidate or canary is shadowed")
            data["shadow"] = {"version": version, "sample": sample, "started_at": time.time(),
                              "log_from": int(log_position)}
            data["history"].append({"at": time.time(), "version": version, "event": f"shadow on {sample:.0%}"})
            return data["shadow"]

        return self._change(fn)

    def stop_shadow(self) -> dict | None:
        def fn(data: dict) -> dict | None:
            old = data["shadow"]
            if old:
                data["history"].append({"at": time.time(), "version": old["version"], "event": "shadow stopped"})
            data["shadow"] = None
            return old

        return self._change(fn)

    @staticmethod
    def route(data: dict, user_id: str, default: str | None = None) -> str | None:
        """The version to serve this user from a loaded registry: the canary's if the user hashes
        into it, else the live one (`default` when none is registered)."""
        ro = data.get("rollout")
        if ro and in_canary(user_id, ro["rollout_id"], ro["share"]):
            return ro["version"]
        return Registry.live_of(data, default)

    @staticmethod
    def live_of(data: dict, default: str | None = None) -> str | None:
        """The live version of a loaded registry (`default` when none is)."""
        return next((k for k, v in data.get("versions", {}).items() if v["state"] == "live"), default)

    def model_for(self, user_id: str) -> str | None:
        """The version to serve this user: the canary's if the user hashes into it, else live."""
        return self.route(self.load(), user_id)
