"""The production entry point for real: gunicorn workers, and the updater as its own process."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.factories import free_port
from tests.server.conftest import seed_store

pytestmark = pytest.mark.slow  # see `make test-fast`

REPO = Path(__file__).resolve().parents[2]
GUNICORN = [sys.executable, "-m", "gunicorn", "-c", "python:pocketrank.server.gunicorn_conf", "pocketrank.server.wsgi:app"]


def env_for(config, **extra):
    return {**os.environ, "POCKETRANK_HOME": str(config.home), "POCKETRANK_STORE": config.store,
            "POCKETRANK_REDIS_URL": config.redis_url, "POCKETRANK_REDIS_PREFIX": config.redis_prefix,
            "PYTHONPATH": str(REPO), **extra}


class Proc:
    def __init__(self, args, env, log: Path):
        self.log = log
        self.proc = subprocess.Popen(args, env=env, cwd=REPO, stdout=open(log, "wb"), stderr=subprocess.STDOUT)

    def stop(self) -> int:
        self.proc.terminate()
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)


def wait_healthy(url: str, proc: Proc, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            pytest.fail(f"server exited: {proc.log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    pytest.fail(f"server not healthy in {timeout} s: {proc.log.read_text()[-3000:]}")


def event(i, user):
    return {"event_id": f"g{i}", "user_id": user, "device_id": "d", "type": "click", "item_id": 6 + i,
            "timestamp": time.time() - 1}


@pytest.fixture
def seeded(store, store_config):
    seed_store(store, store_config.home)
    return store_config


def test_gunicorn_serves_events_and_recommendations_with_the_embedded_updater(seeded, store, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = Proc(GUNICORN, env_for(seeded, POCKETRANK_BIND=f"127.0.0.1:{port}", POCKETRANK_WORKERS="2"),
                  tmp_path / "gunicorn.log")
    try:
        wait_healthy(url, server)
        with httpx.Client(base_url=url, timeout=10) as c:
            body = c.post("/v1/events", json={"events": [event(i, "g-user") for i in range(5)]}).json()
            assert body["accepted"] == 5
            # Read-your-writes holds on whichever worker answers next.
            for _ in range(6):
                assert c.get("/v1/users/g-user").json()["n_events"] == 5
            recs = c.get("/v1/recommendations", params={"user_id": "g-user", "k": 10}).json()
            assert recs["path"] == "personal" and len(recs["items"]) == 10
            assert c.post("/v1/events", content=b"{", headers={"Content-Type": "application/json"}).status_code == 400
    finally:
        assert server.stop() == 0, server.log.read_text()[-3000:]
    assert store.count_events([f"g{i}" for i in range(5)]) == 5
    assert "Booting worker" in server.log.read_text()


def test_at_scale_the_updater_runs_as_its_own_process(seeded, store, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = env_for(seeded, POCKETRANK_BIND=f"127.0.0.1:{port}", POCKETRANK_WORKERS="1", POCKETRANK_UPDATER="external")
    server = Proc(GUNICORN, env, tmp_path / "gunicorn.log")
    updater = None
    try:
        wait_healthy(url, server)
        with httpx.Client(base_url=url, timeout=10) as c:
            assert c.post("/v1/events", json={"events": [event(1, "x-user")]}).json()["accepted"] == 1
            time.sleep(0.3)
            assert c.get("/v1/users/x-user").status_code == 404  # logged, not folded: no updater yet
            updater = Proc([sys.executable, "-m", "pocketrank", "updater", "--idle-wait", "0.1"], env,
                           tmp_path / "updater.log")
            deadline = time.monotonic() + 30
            while c.get("/v1/users/x-user").status_code != 200:
                assert time.monotonic() < deadline, updater.log.read_text()[-3000:]
                time.sleep(0.05)
            t0 = time.monotonic()
            c.post("/v1/events", json={"events": [event(2, "x-user")]})
            while c.get("/v1/users/x-user").json()["n_events"] != 2:
                assert time.monotonic() - t0 < 10
                time.sleep(0.005)
    finally:
        if updater:
            assert updater.stop() == 0, updater.log.read_text()[-3000:]
        assert server.stop() == 0
    assert "stopped after folding 2 events" in updater.log.read_text()


def test_the_dockerfile_runs_the_same_entry_point():
    text = (REPO / "Dockerfile").read_text()
    cmd = re.search(r'^CMD \[(.*)\]$', text, re.M).group(1)
    assert [s.strip().strip('"') for s in cmd.split(",")] == ["bash", "deploy/start.sh"]
    # The script starts this same gunicorn line behind nginx (tests/server/test_slow_clients.py runs it).
    assert " ".join(GUNICORN[1:]) in (REPO / "deploy" / "start.sh").read_text()
