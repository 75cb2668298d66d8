"""`bench attack input`: hostile input, floods and slow clients against the production setup.

The server is the documented production setup, for real: deploy/start.sh (nginx in front of
gunicorn, 2 workers x 4 threads) on a home trained on MovieLens-100k (one epoch), SQLite store,
rate limits lowered so a flood shows in seconds. Cross-worker counting runs two gunicorn workers
on SQLite and, when a redis-server binary exists, on a private Redis. Clients use addresses of
the loopback range (127.0.0.x) so each class has a budget of its own.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

import httpx

from pocketrank.demo_app.localserver import free_port

REPO = Path(__file__).resolve().parents[1]
OPERATOR = {"X-Operator-Key": "attack-bench-operator-key"}
BURST = 30  # requests per device and per address per 300 s in the deployed server


class Server:
    """A process group started from the repository (deploy/start.sh or gunicorn), stopped by its id."""

    def __init__(self, args: list[str], env: dict, log: Path, url: str):
        self.url, self.log = url, log
        self.proc = subprocess.Popen(args, env={**os.environ, "PYTHONPATH": str(REPO), **env}, cwd=REPO,
                                     stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(url + "/healthz", headers=OPERATOR, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def client(address: str, **kw) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=10, **kw)


def outcome_of(status: int, refused: bool) -> str:
    """A status as an outcome: 5xx is 5xx; otherwise whether the system did what it must."""
    if status >= 500:
        return "5xx"
    return "refused" if refused else "wrong"


# --- input bounds ---

def _event(event_id: str, timestamp: object = None, item: str = "50") -> dict:
    return {"event_id": event_id, "user_id": "attack-u", "device_id": "d", "type": "click", "item_id": item,
            "timestamp": time.time() - 5 if timestamp is None else timestamp}


def input_bounds(report, url: str) -> None:
    cls = "input bounds (server)"
    json_h = {"Content-Type": "application/json", **OPERATOR}
    huge = "1" + "0" * 400
    with client("127.0.0.10", base_url=url) as c:
        for path in ("/v1/events", "/v1/items", "/v1/devices"):
            resp = c.post(path, content="[" * 50_000 + "]" * 50_000, headers=json_h)
            report(cls, f"JSON nested 50,000 deep to {path}", outcome_of(resp.status_code, resp.status_code == 400),
                   str(resp.status_code))
        ev_t = '{"events":[{"event_id":"n1","user_id":"u","device_id":"d","type":"click","item_id":"50","timestamp":%s}]}'
        it_t = '{"items":[{"item_id":"attack-p","title":"Tent","category":"Outdoor","price":%s}]}'
        for name, body, path in [("timestamp 1 + 400 zeros", ev_t % huge, "/v1/events"),
                                 ("timestamp 1e400", ev_t % "1e400", "/v1/events"),
                                 ("timestamp NaN", ev_t % "NaN", "/v1/events"),
                                 ("price 1 + 400 zeros", it_t % huge, "/v1/items"),
                                 ("price 1 + 400 zeros .0", it_t % (huge + ".0"), "/v1/items"),
                                 ("price Infinity", it_t % "Infinity", "/v1/items"),
                                 ("price 2^63", it_t % str(2**63), "/v1/items")]:
            resp = c.post(path, content=body, headers=json_h)
            report(cls, name, outcome_of(resp.status_code, resp.status_code == 400), str(resp.status_code))
        for name, item in [("price 1e39", {"price": 1e39}), ("price -1", {"price": -1}),
                           ("stock 10**30", {"stock": 10**30}), ("year 10**18", {"year": 10**18}),
                           ("created_at 1e300", {"created_at": 1e300})]:
            resp = c.post("/v1/items", json={"items": [{"item_id": "attack-p", "title": "Tent", "category": "Outdoor",
                                                        **item}]}, headers=OPERATOR)
            # Refused either at the door (a 400: no field holds it) or by the product's schema.
            ok = resp.status_code == 400 or (resp.status_code == 200 and resp.json()["rejected"] == 1)
            report(cls, name, outcome_of(resp.status_code, ok), resp.text[:120])
        resp = c.post("/v1/events", json={"events": [_event("good-1"), _event("bad-ts", 10**18)]})
        body = resp.json() if resp.status_code < 500 else {}
        kept = resp.status_code == 422 and [r["status"] for r in body.get("results", [])] == ["accepted", "rejected"]
        report(cls, "bad timestamp beside a good event (the good one logged)", outcome_of(resp.status_code, kept),
               resp.text[:120])
        # A reused event id with other content: a conflict, and the first event stays.
        first = _event("reused-1", item="50")
        c.post("/v1/events", json={"events": [first]})
        again = c.post("/v1/events", json={"events": [first]}).json()["results"][0]["status"]
        other = c.post("/v1/events", json={"events": [{**first, "item_id": "51"}]})
        status = other.json()["results"][0]["status"] if other.status_code < 500 else "5xx"
        report("event id reuse", "same id, other content", outcome_of(other.status_code, status == "conflict"),
               status)
        report("event id reuse", "same id, same content (a retry)", "survived" if again == "duplicate" else "wrong",
               again)


def publish_any_product(report, root: Path, url: str) -> None:
    from pocketrank.server.bundle.publish import publish_job
    from pocketrank.server.home import Home

    cls = "publish vs stored products"
    home = Home(root)
    store = home.store()
    items = store.get_items([1, 2, 3, 4])
    cases = [("price 1e39", replace(items[1], price=1e39)), ("price inf", replace(items[2], price=float("inf"))),
             ("price -5", replace(items[3], price=-5.0)), ("a 300-byte product id", replace(items[4], sku="x" * 300))]
    for name, item in cases:
        store.put_items([item])  # straight into the store, as an old row or a hand edit would be
        try:
            out = publish_job(home, progress=False)
            ok = (home.bundle_dir(out["version"]) / "manifest.json").exists()
            sync = httpx.get(url + "/v1/sync", params={"users": "196"}, headers=OPERATOR, timeout=10)
            report(cls, name, "survived" if ok and sync.status_code == 200 else "wrong",
                   f"bundle {out['version']}, items left out {out['items_left_out']}, sync {sync.status_code}")
        except Exception as exc:  # noqa: BLE001  a failed publish is the finding
            report(cls, name, "wrong", f"publish failed: {type(exc).__name__}: {exc}"[:200])


# --- rate limits ---

def rate_limits(report, url: str) -> None:
    cls = "rate limits"
    with client("127.0.0.20", base_url=url) as c:
        codes = [c.get("/healthz") for _ in range(BURST + 1)]
        last = codes[-1]
        ok = [r.status_code for r in codes[:BURST]] == [200] * BURST and last.status_code == 429 \
            and int(last.headers.get("Retry-After", "0")) >= 1
        report(cls, "anonymous flood past the limit: 429 with Retry-After", outcome_of(last.status_code, ok),
               f"{last.status_code} Retry-After {last.headers.get('Retry-After')}")
        for path in ("/v1/recommendations?user_id=196", "/v1/sync?users=196", "/openapi.json", "/v1/users/196"):
            resp = c.get(path)
            report(cls, f"{path.split('?')[0]} is limited too", outcome_of(resp.status_code, resp.status_code == 429),
                   str(resp.status_code))
        forged = c.get("/healthz", headers={"X-Forwarded-For": "203.0.113.5"})
        report(cls, "a forged X-Forwarded-For buys no budget", outcome_of(forged.status_code,
                                                                           forged.status_code == 429),
               str(forged.status_code))
    with client("127.0.0.21", base_url=url) as c:
        tokens = []
        for name in ("phone-a", "phone-b"):
            reg = c.post("/v1/devices", json={"device_id": name, "users": ["196"]}, headers=OPERATOR)
            tokens.append({"Authorization": f"Bearer {reg.json()['token']}"})
        a = [c.get("/healthz", headers=tokens[0]).status_code for _ in range(BURST + 1)]
        b = c.get("/healthz", headers=tokens[1]).status_code
        ok = a[-1] == 429 and b == 200
        report(cls, "one device's burst leaves the next device on the same address alone",
               "survived" if ok else outcome_of(max(a[-1], b), False), f"device a {a[-1]}, device b {b}")
    with client("127.0.0.22", base_url=url) as c:
        codes = [c.get("/healthz", headers={"Authorization": f"Bearer invented-{i}"}).status_code
                 for i in range(BURST + 1)]
        report(cls, "invented tokens count against the address", outcome_of(codes[-1], codes[-1] == 429),
               str(codes[-1]))


def _redis(tmp: Path):
    binary = shutil.which("redis-server")
    if binary is None:
        return None, None
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp), "--save", ""],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    return None, None


def across_workers(report, tmp: Path) -> None:
    cls = "rate limits across workers"
    redis_proc, redis_url = _redis(tmp)
    stores = [("sqlite", {})] + ([("redis", {"POCKETRANK_STORE": "redis", "POCKETRANK_REDIS_URL": redis_url,
                                             "POCKETRANK_REDIS_PREFIX": f"attack-{uuid.uuid4().hex[:6]}:"})]
                                if redis_url else [])
    try:
        for name, extra in stores:
            port = free_port()
            env = {"POCKETRANK_HOME": str(tmp / f"home-{name}"), "POCKETRANK_BIND": f"127.0.0.1:{port}",
                   "POCKETRANK_WORKERS": "2", "POCKETRANK_OPERATOR_KEY": "attack-bench-operator-key", "POCKETRANK_REQUEST_BURST": "10",
                   "POCKETRANK_REQUEST_RATE": "0.1", "POCKETRANK_LOG_LEVEL": "warning", **extra}
            server = Server([sys.executable, "-m", "gunicorn", "-c", "python:pocketrank.server.gunicorn_conf", "pocketrank.server.wsgi:app"],
                            env, tmp / f"gunicorn-{name}.log", f"http://127.0.0.1:{port}")
            try:
                reg = httpx.post(server.url + "/v1/devices", json={"device_id": "p", "users": ["u"]}, headers=OPERATOR)
                auth = {"Authorization": f"Bearer {reg.json()['token']}", "Connection": "close"}
                served = [httpx.get(server.url + "/healthz", headers=auth).status_code for _ in range(60)].count(200)
            finally:
                server.stop()
            if name == "redis":
                report(cls, "2 gunicorn workers, Redis: one count", "refused" if served == 10 else "wrong",
                       f"{served} of 60 served, limit 10")
            else:  # documented: each worker counts in its own memory
                report(cls, "2 gunicorn workers, SQLite: per worker (documented)",
                       "refused" if served <= 20 else "wrong", f"{served} of 60 served, limit 10 per worker")
    finally:
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(10)


# --- slow clients ---

class Trickle:
    def __init__(self, port: int, n: int, source: str = "127.0.0.2"):
        self.socks, self.stop = [], threading.Event()
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port), source_address=(source, 0))
            s.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 100000\r\n\r\n")
            self.socks.append(s)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(1.0):
            for s in self.socks:
                try:
                    s.send(b"[")
                except OSError:
                    pass

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        for s in self.socks:
            s.close()


def _probe(url: str, seconds: float, source: str) -> list:
    out, end = [], time.monotonic() + seconds
    with client(source) as c:
        while time.monotonic() < end:
            try:
                out.append(c.get(url + "/healthz", timeout=3).status_code)
            except httpx.HTTPError as exc:
                out.append(type(exc).__name__)
            time.sleep(0.5)
    return out


def slow_clients(report, url: str, port: int) -> None:
    cls = "slow bodies"
    for n, source in ((12, "127.0.0.30"), (300, "127.0.0.31")):
        attack = Trickle(port, n)
        try:
            answers = _probe(url, 6, source)
        finally:
            attack.close()
        ok = answers and all(a == 200 for a in answers)
        report(cls, f"{n} connections trickling 100 KB at 1 B/s; /healthz from another address",
               "survived" if ok else "wrong", f"{answers.count(200)} of {len(answers)} probes answered")
    s = socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.32", 0))
    s.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    s.settimeout(20)
    started = time.monotonic()
    try:
        answer = s.recv(4096)
        dropped = answer == b"" or answer.startswith(b"HTTP/1.1 408")
    except OSError:
        dropped = False
    report(cls, "a client that stops sending mid-body is dropped", "refused" if dropped else "wrong",
           f"after {time.monotonic() - started:.0f} s")
    s.close()


def _trained_home(root: Path) -> None:
    from pocketrank.server.bundle.publish import publish_job
    from pocketrank.server.data.datasets import import_movielens
    from pocketrank.server.home import Home
    from pocketrank.server.jobs.train import export_job, train_job

    home = Home(root)
    import_movielens(home.store(), "100k", progress=False)
    train_job(home, epochs=1, progress=False)
    export_job(home, n_users=100)
    publish_job(home, progress=False)


def run(report) -> None:
    if shutil.which("nginx") is None and not os.path.exists("/usr/sbin/nginx"):
        raise RuntimeError("nginx is needed for the production setup (apt-get install nginx)")
    with tempfile.TemporaryDirectory(prefix="attack-input-") as tmp_name:
        tmp = Path(tmp_name)
        root = tmp / "home"
        print("  input: training a home on MovieLens-100k (one epoch) ...", flush=True)
        _trained_home(root)
        port = free_port()
        env = {"POCKETRANK_HOME": str(root), "POCKETRANK_PORT": str(port), "POCKETRANK_UPSTREAM_PORT": str(free_port()),
               "POCKETRANK_RUN_DIR": str(tmp / "nginx"), "PYTHON": sys.executable, "POCKETRANK_OPERATOR_KEY": "attack-bench-operator-key",
               "POCKETRANK_REQUEST_BURST": str(BURST), "POCKETRANK_REQUEST_RATE": str(BURST / 300),
               "POCKETRANK_ADDRESS_BURST": str(BURST), "POCKETRANK_ADDRESS_RATE": str(BURST / 300),
               "POCKETRANK_LOG_LEVEL": "warning"}
        server = Server(["bash", str(REPO / "deploy" / "start.sh")], env, tmp / "start.log", f"http://127.0.0.1:{port}")
        try:
            input_bounds(report, server.url)
            publish_any_product(report, root, server.url)
            rate_limits(report, server.url)
            slow_clients(report, server.url, port)
        finally:
            server.stop()
        across_workers(report, tmp)
