"""The model registry: versions with their metrics, lineage and state, in `<home>/registry.json`.

States: candidate (trained, gated, not served) -> canary (served to a share of users) -> live
(served to everyone) -> retired. A rollback sends a canary back to candidate-rejected (`retired`
with the reason). At most one version is live and at most one is in canary; promoting a canary
retires the previous live version. The file is rewritten atomically (temp file + rename), and a
process-local lock serialises writers; one server process, or one job at a time, writes it.

    reg = Registry(home.root)
    reg.register("m2", metrics={"hr@10": 0.11}, lineage={"parent": "m1", "data_window": [t0, t1]})
    reg.start_canary("m2", share=0.05)          # -> rollout id "m2-canary-1"
    reg.promote("m2") / reg.rollback("m2", reason="CTR z=-4.1")
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from shared.errors import ValidationError

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

    def start_canary(self, version: str, share: float) -> dict:
        if not 0 < share < 1:
            raise ValidationError("share", "must be between 0 and 1 (exclusive)")

        def fn(data: dict) -> dict:
            rec = self._require(data, version, "candidate")
            if data["rollout"]:
                raise ValidationError("version", f"{data['rollout']['version']} is already in canary")
            n = sum(1 for h in data["history"] if h["version"] == version and h["event"].startswith("canary"))
            rec["state"], rec["updated_at"] = "canary", time.time()
            data["rollout"] = {"rollout_id": f"{version}-canary-{n + 1}", "version": version, "share": share,
                               "control": next((k for k, v in data["versions"].items() if v["state"] == "live"), None),
                               "started_at": time.time(), "decisions": []}
            data["history"].append({"at": time.time(), "version": version, "event": f"canary at {share:.0%}"})
            return data["rollout"]

        return self._change(fn)

    def record_decision(self, decision: dict, share: float | None = None) -> dict:
        """Log a canary decision (with its figures); optionally widen the share."""

        def fn(data: dict) -> dict:
            ro = data["rollout"]
            if not ro:
                raise ValidationError("rollout", "no canary is running")
            ro["decisions"].append({"at": time.time(), **decision})
            if share is not None:
                if share < ro["share"]:
                    raise ValidationError("share", "a canary only widens; roll back to narrow it")
                ro["share"] = share
            return ro

        return self._change(fn)

    def promote(self, version: str, reason: str = "") -> dict:
        def fn(data: dict) -> dict:
            rec = self._require(data, version, "canary")
            self._retire_live(data)
            rec["state"], rec["updated_at"] = "live", time.time()
            data["rollout"] = None
            data["history"].append({"at": time.time(), "version": version, "event": f"promoted: {reason}"})
            return rec

        return self._change(fn)

    def rollback(self, version: str, reason: str = "") -> dict:
        def fn(data: dict) -> dict:
            rec = self._require(data, version, "canary")
            rec["state"], rec["updated_at"] = "retired", time.time()
            rec["retired_reason"] = f"rolled back: {reason}"
            data["rollout"] = None
            data["history"].append({"at": time.time(), "version": version, "event": f"rolled back: {reason}"})
            return rec

        return self._change(fn)

    def model_for(self, user_id: str) -> str | None:
        """The version to serve this user: the canary's if the user hashes into it, else live."""
        from .canary import in_canary

        data = self.load()
        ro = data["rollout"]
        if ro and in_canary(user_id, ro["rollout_id"], ro["share"]):
            return ro["version"]
        return next((k for k, v in data["versions"].items() if v["state"] == "live"), None)
