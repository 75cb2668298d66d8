"""Loopback load generation for bench/server.py: keep-alive HTTP clients, open and closed loops.

Open-loop latencies are measured from each request's scheduled send time, not
from when a client thread got to it, so a saturated server shows its queueing
delay instead of hiding it (no coordinated omission).
"""

from __future__ import annotations

import http.client
import json
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np


class Client:
    """One keep-alive connection per thread."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self._local = threading.local()

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        return conn

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        for attempt in (0, 1):
            conn = self._conn()
            try:
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                return resp.status, resp.read()
            except (http.client.HTTPException, OSError):
                conn.close()
                self._local.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def post_json(self, path: str, body: bytes) -> dict:
        status, data = self.request("POST", path, body)
        if status != 200:
            raise RuntimeError(f"POST {path} answered {status}: {data[:200]!r}")
        return json.loads(data)


def pct(values, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


@dataclass
class LoadResult:
    offered: float
    sent: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def achieved(self) -> float:
        return len(self.latencies_ms) / self.seconds if self.seconds else 0.0

    def summary(self) -> dict:
        return {"offered": self.offered, "achieved": round(self.achieved, 1), "errors": self.errors,
                "p50_ms": round(pct(self.latencies_ms, 50), 2), "p99_ms": round(pct(self.latencies_ms, 99), 2)}


def open_loop(rate: float, seconds: float, call: Callable[[int], None], threads: int = 48) -> LoadResult:
    """Start call(i) at `rate` per second for `seconds`; latency from the scheduled start."""
    res = LoadResult(rate)
    lock = threading.Lock()
    n = int(rate * seconds)
    start = time.perf_counter() + 0.05

    def run(i: int, due: float) -> None:
        try:
            call(i)
            ok = True
        except Exception:
            ok = False
        done = time.perf_counter()
        with lock:
            if ok:
                res.latencies_ms.append((done - due) * 1000)
            else:
                res.errors += 1

    with ThreadPoolExecutor(threads) as pool:
        for i in range(n):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            pool.submit(run, i, due)
            res.sent += 1
    res.seconds = max(time.perf_counter() - start, 1e-9)
    return res


def closed_loop(workers: int, seconds: float, call: Callable[[int, int], int]) -> tuple[int, float, list[float]]:
    """`workers` threads call(worker, i) back to back for `seconds`; call returns units done.
    Returns (units, elapsed seconds, per-call latencies in ms)."""
    stop = time.perf_counter() + seconds
    units, lats = [0] * workers, [[] for _ in range(workers)]

    def loop(w: int) -> None:
        i = 0
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            units[w] += call(w, i)
            lats[w].append((time.perf_counter() - t0) * 1000)
            i += 1

    t0 = time.perf_counter()
    ts = [threading.Thread(target=loop, args=(w,)) for w in range(workers)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(units), time.perf_counter() - t0, [x for lat in lats for x in lat]


class FreshnessProbe:
    """Polls the store until each registered user's record has folded the expected events; with `encode`
    (record -> vector: a sequence model's embedding, computed from the record when read), until that ran too."""

    def __init__(self, store, dim: int, encode=None):
        self.store, self.dim, self.encode = store, dim, encode
        self.pending: dict[str, tuple[float, int]] = {}  # user -> (answer time, n_events expected)
        self.latencies_ms: list[float] = []
        self.failures = 0  # users whose record `encode` raised on: dropped, without a latency
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def expect(self, user_id: str, answered_at: float, n_events: int = 1) -> None:
        with self.lock:
            self.pending[user_id] = (answered_at, n_events)

    def _run(self) -> None:
        while not self.stop.is_set():
            with self.lock:
                users = list(self.pending)
            if users:
                records = self.store.user_records(users, self.dim)
                now = time.perf_counter()
                with self.lock:
                    ready = [(u, self.pending[u][0]) for u in users if records[u].state.n_events >= self.pending[u][1]]
                done, failed = [], []
                for u, at in ready:  # outside the lock: the load's threads register users meanwhile
                    own = 0.0  # a user's own encoder call, not those of the users read in the same pass
                    if self.encode is not None:
                        t = time.perf_counter()
                        try:
                            self.encode(records[u])
                        except Exception:  # noqa: BLE001  (counted and reported; the probe goes on)
                            failed.append(u)
                            continue
                        own = time.perf_counter() - t
                    done.append((u, max(0.0, (now + own - at) * 1000)))
                with self.lock:
                    for u, ms in done:
                        self.latencies_ms.append(ms)
                        del self.pending[u]
                    for u in failed:
                        self.failures += 1
                        del self.pending[u]
            time.sleep(0.0005)

    def finish(self, timeout: float = 10.0) -> int:
        deadline = time.perf_counter() + timeout
        while self.pending and time.perf_counter() < deadline:
            time.sleep(0.01)
        self.stop.set()
        self.thread.join()
        return len(self.pending)


def wait_ready(client: Client, procs: list, path: str, deadline: float, failure: str) -> None:
    """Poll `path` until it answers 200; RuntimeError(failure) past `deadline` (monotonic) or once a process exited."""
    while True:
        try:
            if client.request("GET", path)[0] == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            raise RuntimeError(failure)
        time.sleep(0.2)


def warm_event(client: Client, tag: str, deadline: float, failure: str) -> None:
    """One click through the API until an updater has folded it (user `tag` answers): measure a warm system."""
    event = {"event_id": tag, "user_id": tag, "device_id": "bench", "type": "click", "item_id": 1,
             "timestamp": time.time()}
    client.post_json("/v1/events", json.dumps({"events": [event]}).encode())
    while client.request("GET", f"/v1/users/{tag}")[0] != 200:
        if time.monotonic() > deadline:
            raise RuntimeError(failure)
        time.sleep(0.05)


def stop_processes(procs: list) -> None:
    """Terminate, then kill what has not exited after 30 s."""
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
