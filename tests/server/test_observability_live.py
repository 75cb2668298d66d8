"""Metrics, request ids and JSON logs on the production entry point: gunicorn with two real workers."""

from __future__ import annotations

import json
import os
import re
import signal
import time

import httpx
import pytest

from tests.factories import free_port
from tests.server.api.test_observability import sample
from tests.server.conftest import seed_store
from tests.server.test_deployment import GUNICORN, Proc, env_for, wait_healthy

pytestmark = pytest.mark.slow

REQUESTS = 40


@pytest.fixture
def sqlite_home(tmp_path):
    from pocketrank.server.config import Config
    from pocketrank.server.stores import open_store

    config = Config(home=tmp_path / "home")
    store = open_store(config)
    seed_store(store, config.home)
    store.close()
    return config


def pids_of(folder, kind: str) -> set[int]:
    return {int(m.group(1)) for f in os.listdir(folder) if (m := re.fullmatch(rf"{kind}_(\d+)\.db", f))}


def scrape(url: str) -> str:
    with httpx.Client(base_url=url, timeout=10) as c:  # a new connection: either worker may answer
        return c.get("/metrics").text


def test_two_workers_counts_are_summed_in_one_scrape_and_lines_carry_the_request_id(sqlite_home, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    prom_dir = tmp_path / "prom"
    prom_dir.mkdir()
    (prom_dir / "counter_999999.db").write_bytes(b"left from a previous run")  # emptied at start
    env = env_for(sqlite_home, POCKETRANK_BIND=f"127.0.0.1:{port}", POCKETRANK_WORKERS="2",
                  POCKETRANK_ACCESS_LOG="-", PROMETHEUS_MULTIPROC_DIR=str(prom_dir))
    env.pop("POCKETRANK_LOG_FORMAT", None)  # stderr is a file here: JSON lines
    server = Proc(GUNICORN, env, tmp_path / "gunicorn.log")
    try:
        wait_healthy(url, server)
        deadline = time.monotonic() + 30
        while len(pids_of(prom_dir, "counter")) < 2:  # until both workers have answered some
            assert time.monotonic() < deadline, f"one worker answered everything: {os.listdir(prom_dir)}"
            for _ in range(REQUESTS):
                assert httpx.get(url + "/v1/users/nobody", timeout=10).status_code == 404  # a connection each
        texts = [scrape(url) for _ in range(12)]
        counts = {sample(t, "pocketrank_http_requests_total", method="GET", route="/v1/users/<user_id>",
                         status=404) for t in texts}
        assert len(counts) == 1, f"scrapes disagree, so a worker's counts are missing: {counts}"
        sent = counts.pop()
        assert sent is not None and sent >= REQUESTS and sent % REQUESTS == 0
        assert sample(texts[-1], "pocketrank_workers") == 2

        resp = httpx.get(url + "/v1/users/nobody", headers={"X-Request-ID": "live-req-7"}, timeout=10)
        assert resp.headers["X-Request-ID"] == "live-req-7"
        ready = httpx.get(url + "/readyz", timeout=10)
        assert ready.status_code == 503 and ready.json()["missing"] == ["bundle"]  # never published

        # A worker killed: gunicorn starts another; the dead one's counts stay, its live gauge goes.
        victim = min(pids_of(prom_dir, "gauge_livesum"))
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while victim in pids_of(prom_dir, "gauge_livesum") or len(pids_of(prom_dir, "gauge_livesum")) < 2:
            assert time.monotonic() < deadline, os.listdir(prom_dir)
            time.sleep(0.1)
        text = scrape(url)
        assert sample(text, "pocketrank_workers") == 2
        assert sample(text, "pocketrank_http_requests_total", method="GET", route="/v1/users/<user_id>",
                      status=404) == sent + 1
    finally:
        assert server.stop() == 0, server.log.read_text()[-3000:]
    lines = []
    for raw in server.log.read_text().splitlines():
        assert "\x1b[" not in raw
        try:
            lines.append(json.loads(raw))
        except ValueError:
            pytest.fail(f"a log line that is not JSON: {raw!r}")
    tagged = [line for line in lines if line.get("request_id") == "live-req-7"]
    assert {line["logger"] for line in tagged} >= {"pocketrank.access", "gunicorn.access"}, tagged
    assert any("Booting worker" in line["message"] for line in lines)
    assert "counter_999999.db" not in os.listdir(prom_dir)
