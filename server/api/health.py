"""GET /healthz (liveness) and GET /readyz (readiness).

/healthz says the process answers HTTP: it touches no store and loads nothing, so a slow or
unreachable store never gets a live worker restarted (a liveness probe, Docker's HEALTHCHECK
start period). /readyz says whether this worker can serve: the store answers (one meta read,
SQLite or Redis), a model is loaded (the ranker for the store's current model, loaded now if not
yet) and a bundle is published; 503 with what is missing until then, 200 after (a readiness probe,
a load balancer's check). Both are open, like /openapi.json.
"""

from __future__ import annotations

import logging

from flask import Blueprint, current_app, jsonify

from pocketrank.shared.errors import PocketrankError

bp = Blueprint("health", __name__)
log = logging.getLogger(__name__)


@bp.get("/healthz")
def healthz():
    return jsonify(status="ok")


def readiness() -> dict:
    """{"ready": bool, "missing": [...], "checks": {name: {"ok", "detail"}}, model and bundle versions}."""
    serving = current_app.extensions["pocketrank"]
    checks: dict[str, dict] = {}
    bundle_version = current = None
    try:
        bundle_version = serving.bundle_version  # a meta read: the store answers, or this raises
        current = serving.store.get_meta("current_model")
        checks["store"] = {"ok": True, "detail": serving.config.store}
    except Exception as exc:  # noqa: BLE001 - whatever the backend raises, the answer is "not ready"
        checks["store"] = {"ok": False, "detail": f"{serving.config.store} store did not answer: "
                                                  f"{type(exc).__name__}: {exc}"}
    if checks["store"]["ok"]:
        try:
            serving.refresh()  # loads the ranker of the store's current model (cached after the first time)
            checks["model"] = {"ok": serving.ranker is not None, "detail": serving.model_version or "none loaded"}
        except PocketrankError as exc:
            checks["model"] = {"ok": False, "detail": str(exc)}
        except Exception as exc:  # noqa: BLE001 - a damaged model file is as unready as a missing one
            checks["model"] = {"ok": False, "detail": f"{type(exc).__name__}: {exc}"}
        checks["bundle"] = _bundle(serving, bundle_version)
    else:
        checks["model"] = checks["bundle"] = {"ok": False, "detail": "unknown: the store did not answer"}
    missing = [name for name, c in checks.items() if not c["ok"]]
    return {"ready": not missing, "missing": missing, "checks": checks,
            "model_version": current, "loaded_model": serving.model_version or None, "bundle_version": bundle_version}


def _bundle(serving, version: int | None) -> dict:
    if not version:
        return {"ok": False, "detail": "no bundle published; run `pocketrank publish`"}
    folder = serving.home.bundle_dir(version)
    if not (folder / "manifest.json").is_file():
        return {"ok": False, "detail": f"bundle {version} has no manifest.json in {folder}"}
    return {"ok": True, "detail": str(version)}


@bp.get("/readyz")
def readyz():
    got = readiness()
    if not got["ready"]:
        log.debug("not ready: %s", ", ".join(f"{m} ({got['checks'][m]['detail']})" for m in got["missing"]))
    return jsonify(status="ready" if got["ready"] else "not_ready", **got), 200 if got["ready"] else 503
