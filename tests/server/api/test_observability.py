"""Request ids, JSON log lines, the service's metrics on /metrics, /healthz and /readyz (Flask's test client)."""

from __future__ import annotations

import io
import json
import logging
import re
import shutil
import socket
import subprocess
import time

import pytest

from pocketrank.server import logs
from pocketrank.server.api.app import create_app
from pocketrank.server.config import Config
from tests.factories import complete_scrape, event_dict, free_port


@pytest.fixture
def json_log():
    """What the root logger writes, as server/logs.py formats it for a non-terminal stderr."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.JsonFormatter())
    handler.addFilter(logs.RequestIdFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)
    yield lambda: [json.loads(line) for line in out.getvalue().splitlines()]
    root.removeHandler(handler)
    root.setLevel(level)


def test_a_valid_request_id_is_echoed_and_tags_the_requests_log_lines(api, json_log):
    resp = api.get("/v1/users/196", headers={"X-Request-ID": "req-42.a:b_c"})
    assert resp.status_code == 200 and resp.headers["X-Request-ID"] == "req-42.a:b_c"
    lines = [line for line in json_log() if line["request_id"] == "req-42.a:b_c"]
    assert lines, json_log()
    access = next(line for line in lines if line["logger"] == "pocketrank.access")
    assert access["route"] == "/v1/users/<user_id>" and access["status"] == 200 and access["duration_ms"] > 0
    assert "\x1b[" not in json.dumps(lines)


@pytest.mark.parametrize("given", ["x" * 129, "has space", "semi;colon", "new\nline", "ünïcode", ""])
def test_an_unsafe_request_id_is_replaced_by_a_fresh_one(api, given):
    resp = api.get("/healthz", environ_base={"HTTP_X_REQUEST_ID": given})  # the header as the server got it
    rid = resp.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", rid) and rid != given


def test_every_answer_carries_an_id_also_errors_and_404s(api):
    ids = set()
    for path in ("/healthz", "/nowhere", "/v1/recommendations", "/v1/metrics/summary?window=abc"):
        resp = api.get(path)
        assert resp.status_code in (200, 400, 404)
        ids.add(resp.headers["X-Request-ID"])
    assert len(ids) == 4


def test_a_log_line_is_json_without_colour_and_text_only_on_a_terminal():
    record = logging.LogRecord("werkzeug", logging.INFO, __file__, 1, '"\x1b[32mGET / HTTP/1.1\x1b[0m" 200', (), None)
    token = logs.REQUEST_ID.set("abc")
    try:
        line = json.loads(logs.JsonFormatter().format(record))
    finally:
        logs.REQUEST_ID.reset(token)
    assert line["message"] == '"GET / HTTP/1.1" 200' and line["request_id"] == "abc" and line["level"] == "info"

    class Tty(io.StringIO):
        def isatty(self):
            return True

    assert logs.wants_json(io.StringIO(), env={}) and not logs.wants_json(Tty(), env={})
    assert "\x1b[" not in logs.TextFormatter().format(record)
    assert logs.wants_json(Tty(), env={"POCKETRANK_LOG_FORMAT": "json"})
    assert not logs.wants_json(io.StringIO(), env={"POCKETRANK_LOG_FORMAT": "text"})


def sample(text: str, name: str, **labels) -> float | None:
    """The value of one series in a Prometheus text page (labels in any order)."""
    for line in text.splitlines():
        m = re.fullmatch(r"(\w+)(?:\{(.*)\})? (\S+)", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if got == {k: str(v) for k, v in labels.items()}:
            return float(m.group(3))
    return None


def test_metrics_count_requests_by_route_rule_with_latency_sync_bytes_and_ingest_lag(api):
    for user in ("196", "186", "nobody-at-all"):
        api.get(f"/v1/users/{user}")
    api.get("/no/such/path")
    sync = api.get("/v1/sync?users=196")
    assert sync.status_code == 200
    body = api.post("/v1/events", json={"events": [event_dict("lag-1", "196", 50, age=120.0),
                                                   event_dict("lag-2", "196", 51, age=7_200.0),
                                                   {"event_id": "bad"}]}).get_json()
    assert body["accepted"] == 2
    text = complete_scrape(api)
    route = "/v1/users/<user_id>"
    assert sample(text, "pocketrank_http_requests_total", method="GET", route=route, status=200) == 2
    assert sample(text, "pocketrank_http_requests_total", method="GET", route=route, status=404) == 1
    assert "nobody-at-all" not in text  # the rule, never the raw path
    assert sample(text, "pocketrank_http_requests_total", method="GET", route="<unmatched>", status=404) == 1
    assert sample(text, "pocketrank_http_request_duration_seconds_count", method="GET", route=route,
                  status=200) == 2
    assert sample(text, "pocketrank_sync_answer_bytes_count", status=200) == 1
    assert sample(text, "pocketrank_sync_answer_bytes_sum", status=200) == len(sync.data)
    assert sample(text, "pocketrank_ingest_lag_seconds_count") == 2  # the rejected event is not counted
    assert sample(text, "pocketrank_ingest_lag_seconds_bucket", le="60.0") == 0
    assert sample(text, "pocketrank_ingest_lag_seconds_bucket", le="300.0") == 1
    assert sample(text, "pocketrank_ingest_lag_seconds_bucket", le="86400.0") == 2
    assert sample(text, "pocketrank_updater_pending_events") == 0  # the embedded updater folded them
    assert sample(text, "pocketrank_bundle_version") == 1 and sample(text, "pocketrank_ready") == 1
    assert sample(text, "pocketrank_workers") == 1
    assert sample(text, "pocketrank_clicks", key="all", value="all") >= 2  # the business gauges stay


def test_an_unhandled_exception_is_counted_by_type(app):
    @app.get("/boom")
    def boom():
        raise RuntimeError("boom")

    client = app.test_client()
    assert client.get("/boom").status_code == 500
    text = client.get("/metrics").get_data(as_text=True)
    assert sample(text, "pocketrank_http_exceptions_total", route="/boom", type="RuntimeError") == 1
    assert sample(text, "pocketrank_http_requests_total", method="GET", route="/boom", status=500) == 1


def test_two_apps_in_one_process_count_apart(app, home):
    other = create_app(Config(home=home)).test_client()
    app.test_client().get("/healthz")
    text = other.get("/metrics").get_data(as_text=True)
    assert sample(text, "pocketrank_http_requests_total", method="GET", route="/healthz", status=200) is None


def test_readyz_is_503_naming_what_is_missing_then_200(home):
    from pocketrank.server.stores import open_store

    app = create_app(Config(home=home))
    client = app.test_client()
    store = app.extensions["pocketrank"].store
    published = store.get_meta("bundle_version")
    store.set_meta("bundle_version", "0")
    resp = client.get("/readyz")
    assert resp.status_code == 503
    body = resp.get_json()
    assert body["status"] == "not_ready" and body["missing"] == ["bundle"]
    assert "pocketrank publish" in body["checks"]["bundle"]["detail"] and body["checks"]["model"]["ok"]
    assert client.get("/healthz").status_code == 200  # alive all along
    store.set_meta("bundle_version", published)
    resp = client.get("/readyz")
    assert resp.status_code == 200 and resp.get_json()["missing"] == [] and resp.get_json()["bundle_version"] == 1

    empty = create_app(Config(home=home.parent / "empty-home"))
    body = empty.test_client().get("/readyz").get_json()
    assert set(body["missing"]) == {"model", "bundle"} and "pocketrank train" in body["checks"]["model"]["detail"]
    open_store(Config(home=home.parent / "empty-home")).close()


def test_readyz_on_each_store_backend(synthetic_app):
    body = synthetic_app.test_client().get("/readyz").get_json()
    assert body["checks"]["store"]["ok"] and body["checks"]["model"]["ok"]
    assert body["missing"] == ["bundle"]  # the synthetic home has a model, never published


def test_readyz_is_503_when_redis_stops_answering_and_healthz_stays_200(tmp_path):
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("no redis-server binary (CI installs it)")
    from tests.server.conftest import seed_store

    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "redis-server did not start"
                time.sleep(0.05)
        config = Config(home=tmp_path / "home", store="redis", redis_url=f"redis://127.0.0.1:{port}/0")
        from pocketrank.server.stores import open_store

        store = open_store(config)
        seed_store(store, config.home)
        store.close()
        client = create_app(config).test_client()
        assert client.get("/readyz").get_json()["checks"]["store"]["ok"]
        proc.terminate()
        proc.wait(10)
        resp = client.get("/readyz")
        assert resp.status_code == 503 and "store" in resp.get_json()["missing"]
        assert "did not answer" in resp.get_json()["checks"]["store"]["detail"]
        assert client.get("/healthz").status_code == 200
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_werkzeugs_own_request_line_is_dropped_and_its_banner_kept():
    drop = logs._NoRequestLines()  # what logs.configure puts on the werkzeug logger
    # werkzeug._internal._log strips the trailing newline of WSGIRequestHandler.log's message
    line = logging.LogRecord("werkzeug", logging.INFO, __file__, 1, '127.0.0.1 - - [06/Dec/2026 23:00:00] "%s" %s %s',
                             ("GET / HTTP/1.1", "200", "-"), None)
    banner = logging.LogRecord("werkzeug", logging.INFO, __file__, 1, " * Running on %s", ("http://127.0.0.1:8000",),
                               None)
    assert not drop.filter(line) and drop.filter(banner)
