"""The device app: a phone-shaped page and the JSON endpoints it calls.

It is what a mobile app would be: the page is the UI, this process embeds the
edge runtime (through `Device`) and reaches the server only through the
network proxy, whose mode the page's connectivity switch sets. The operator
page reads `/api/metrics`, computed from this session's own log plus the
server's /readyz, which the operator (not the phone) asks directly.
"""

from __future__ import annotations

import os
import time

import httpx
from flask import Flask, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from pocketrank.edge_runtime import PocketrankError, ValidationError

from . import metrics
from .device import Device
from .netproxy import MODES, NetProxy

ACTIONS = ("view", "click", "add_to_cart", "purchase", "search")


class BadRequest(Exception):
    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


def create_device_app(device: Device, proxy: NetProxy, server_url: str) -> Flask:
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024

    def user_arg(value) -> str:
        if value not in device.users:
            raise BadRequest("user_id", f"must be one of the demo users {', '.join(device.users)}")
        return value

    @app.get("/")
    def phone():
        return render_template("device.html", users=device.users, modes=MODES, mode=proxy.mode)

    @app.get("/operator")
    def operator():
        return render_template("operator.html")

    @app.get("/api/feed")
    def feed():
        return jsonify(device.feed(user_arg(request.args.get("user_id", device.users[0]))))

    @app.post("/api/track")
    def track():
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise BadRequest("body", "must be a JSON object")
        etype = body.get("type")
        if etype not in ACTIONS:
            raise BadRequest("type", f"must be one of {', '.join(ACTIONS)}")
        list_id = body.get("list_id")
        if list_id is not None and (isinstance(list_id, bool) or not isinstance(list_id, int)):
            raise BadRequest("list_id", "must be an integer")
        # item_id: the product's own id as the feed gave it (a string); the SDK validates it (400 naming item_id).
        return jsonify(device.act(user_arg(body.get("user_id")), etype, body.get("item_id"),
                                  body.get("query"), list_id))

    @app.get("/api/search")
    def search():
        query = (request.args.get("q") or "").strip()
        if not query or len(query) > 100:
            raise BadRequest("q", "must be 1-100 characters")
        return jsonify(query=query, items=device.search(query))

    @app.post("/api/connectivity")
    def connectivity():
        body = request.get_json(silent=True) or {}
        mode = body.get("mode")
        if mode not in MODES:
            raise BadRequest("mode", f"must be one of {', '.join(MODES)}")
        was = proxy.mode
        proxy.set_mode(mode)
        device.note("network", f"network: {was} -> {mode}")
        answer = {"mode": mode, "was": was}
        if MODES.index(mode) < MODES.index(was):  # the link got better: the app's network callback
            answer["reconnect"] = device.reconnect()
        answer["status"] = _status()
        return jsonify(answer)

    @app.post("/api/sync")
    def sync():
        return jsonify(device.sync())

    def _status() -> dict:
        return {**device.status(), "network": proxy.stats()}

    @app.get("/api/status")
    def status():
        return jsonify(_status())

    @app.get("/api/events")
    def events():
        """Every event this session tracked, with its id: what the server must hold exactly once."""
        return jsonify(device_id=device.device_id, events=device.tracked())

    def _server_summary() -> dict:
        """The server's own monitoring over its event log (every device), the last hour of it."""
        try:
            # An operator surface: the demo's server has no key unless POCKETRANK_OPERATOR_KEY says one.
            key = os.environ.get("POCKETRANK_OPERATOR_KEY", "")
            body = httpx.get(server_url + "/v1/metrics/summary", params={"window": 3600},
                             headers={"X-Operator-Key": key} if key else None, timeout=2.0).json()
        except (httpx.HTTPError, ValueError) as exc:
            return {"error": f"{type(exc).__name__}: {exc}"}
        return {"overall": body.get("overall"), "by_source": (body.get("by_segment") or {}).get("source", {}),
                "events_per_second": body.get("events_per_second"), "canary": body.get("canary"),
                "models": body.get("models"), "window": body.get("window")}

    @app.get("/api/metrics")
    def operator_metrics():
        log = device.snapshot()
        data = metrics.compute(log, time.time())
        try:
            health = httpx.get(server_url + "/readyz", timeout=1.0).json()  # 503 until ready: the body says why
        except (httpx.HTTPError, ValueError) as exc:
            health = {"status": "unreachable", "error": f"{type(exc).__name__}: {exc}"}
        status = log["status"]
        data["versions"] = {
            "server": health,
            "device": {"model_version": status.get("model_version"), "bundle_version": status.get("bundle_version"),
                       "synced_at": status.get("synced_at"), "expires_at": status.get("expires_at")},
        }
        data["device"] = {k: status.get(k) for k in ("outbox", "dropped", "rejected", "connectivity", "users")}
        data["server_monitoring"] = _server_summary()
        data["network"] = proxy.stats()
        return jsonify(data)

    @app.errorhandler(BadRequest)
    def _bad(exc: BadRequest):
        return jsonify(error="invalid_request", field=exc.field, message=exc.message), 400

    @app.errorhandler(ValidationError)
    def _invalid(exc: ValidationError):
        return jsonify(error="invalid_request", field=exc.field, message=exc.message), 400

    @app.errorhandler(PocketrankError)
    def _sdk(exc: PocketrankError):
        return jsonify(error="device_error", message=str(exc)), 503

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        return jsonify(error=exc.name.lower().replace(" ", "_"), message=exc.description), exc.code

    return app
