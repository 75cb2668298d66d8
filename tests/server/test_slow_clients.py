"""Slow clients against the documented production setup: deploy/start.sh (nginx in front of gunicorn,
2 workers x 4 threads), real sockets, real processes.

Without nginx, 12 connections trickling a 100 KB body at a byte a second hold gunicorn's 8 threads
and /healthz stops answering (bench/_attack_input.py measures that too); through nginx they cost
nothing but nginx connections.
"""

import os
import shutil
import socket
import sys
import threading
import time

import httpx
import pytest

from tests.factories import free_port
from tests.server.conftest import seed_store
from tests.server.test_deployment import REPO, Proc, env_for

pytestmark = pytest.mark.slow  # see `make test-fast`

ATTACKER = "127.0.0.2"  # the loopback range: the attacker has an address of its own
BURST = 40  # requests per address per 400 s: the probes stay under it, the last test goes past it


@pytest.fixture
def deployed(tmp_path):
    if shutil.which("nginx") is None and not os.path.exists("/usr/sbin/nginx"):
        pytest.skip("no nginx on this machine (apt-get install nginx); .ci/run installs it")
    from pocketrank.server.config import Config
    from pocketrank.server.stores import open_store

    config = Config(home=tmp_path / "home")
    store = open_store(config)
    seed_store(store, config.home)
    store.close()
    port = free_port()
    env = env_for(config, POCKETRANK_PORT=str(port), POCKETRANK_UPSTREAM_PORT=str(free_port()),
                  POCKETRANK_RUN_DIR=str(tmp_path / "nginx"), PYTHON=sys.executable,
                  POCKETRANK_ADDRESS_BURST=str(BURST), POCKETRANK_ADDRESS_RATE="0.1")
    env.pop("POCKETRANK_BIND", None)
    proc = Proc(["bash", str(REPO / "deploy" / "start.sh")], env, tmp_path / "start.log")
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=1, headers={"X-Forwarded-For": "1"}).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert proc.proc.poll() is None and time.monotonic() < deadline, proc.log.read_text()[-3000:]
        time.sleep(0.2)
    yield url, port
    proc.stop()
    assert not [p for p in os.listdir(tmp_path / "nginx") if p.endswith(".pid")], "nginx left running"


class Trickle:
    """`n` connections from ATTACKER, each declaring a 100 KB body and sending one byte a second."""

    def __init__(self, port: int, n: int):
        self.socks, self.stop = [], threading.Event()
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port), source_address=(ATTACKER, 0))
            s.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 100000\r\n\r\n")
            self.socks.append(s)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.wait(1.0):
            for s in self.socks:
                try:
                    s.send(b"[")
                except OSError:
                    pass

    def close(self):
        self.stop.set()
        self.thread.join()
        for s in self.socks:
            s.close()


def probe(url: str, seconds: float) -> list:
    """/healthz from 127.0.0.1 twice a second for `seconds`: each answer's status (or the error's name)."""
    out, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            out.append(httpx.get(url + "/healthz", timeout=3).status_code)
        except httpx.HTTPError as exc:
            out.append(type(exc).__name__)
        time.sleep(0.5)
    return out


@pytest.mark.parametrize("n", [12, 300])
def test_slow_bodies_do_not_stop_other_clients(deployed, n):
    url, port = deployed
    attack = Trickle(port, n)
    try:
        answers = probe(url, 6)
        assert answers == [200] * len(answers), answers
        events = {"events": [{"event_id": "ok-1", "user_id": "u", "device_id": "d", "type": "click",
                              "item_id": "7", "timestamp": time.time() - 5}]}
        resp = httpx.post(url + "/v1/events", json=events, timeout=3, headers={"X-Forwarded-For": "spoof"})
        assert resp.status_code == 200 and resp.json()["accepted"] == 1 and resp.headers["server"] == "nginx"
    finally:
        attack.close()


def test_a_client_that_stops_sending_is_dropped(deployed):
    _, port = deployed
    s = socket.create_connection(("127.0.0.1", port), source_address=(ATTACKER, 0))
    s.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    s.settimeout(20)
    started = time.monotonic()
    answer = s.recv(4096)  # nginx answers 408 or just closes: either way the connection ends
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408")
    assert time.monotonic() - started < 15
    s.close()


def test_behind_nginx_each_client_address_has_its_own_budget(deployed):
    url, _ = deployed
    clients = {a: httpx.Client(transport=httpx.HTTPTransport(local_address=a), timeout=5)
               for a in ("127.0.0.3", "127.0.0.4")}
    try:
        first = [clients["127.0.0.3"].get(url + "/healthz").status_code for _ in range(BURST + 1)]
        assert first == [200] * BURST + [429]
        # A forged X-Forwarded-For is replaced by nginx: it buys no fresh budget.
        forged = clients["127.0.0.3"].get(url + "/healthz", headers={"X-Forwarded-For": "203.0.113.9"})
        assert forged.status_code == 429
        assert clients["127.0.0.4"].get(url + "/healthz").status_code == 200
    finally:
        for c in clients.values():
            c.close()
