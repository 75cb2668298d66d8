"""A throwaway Redis Cluster on loopback: N masters, no replicas, for tests and benchmarks.

    with LocalCluster(tmp_dir) as cluster:
        RedisClusterStore(cluster.url)

Each master is a real redis-server with --cluster-enabled yes (append-only, fsync always, as
production should run); `redis-cli --cluster create` assigns the slots; the cluster is ready
when every node reports cluster_state:ok and sees every master.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from pathlib import Path


class ClusterUnavailable(RuntimeError):
    """No redis-server or redis-cli binary on this machine."""


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_ports(n: int) -> list[int]:
    """n ports whose cluster bus ports (+10000) are free too."""
    ports: list[int] = []
    while len(ports) < n:
        p = random.randrange(20_000, 45_000)
        if p not in ports and _free(p) and _free(p + 10_000):
            ports.append(p)
    return ports


def _cli(*args: str, timeout: float = 30) -> str:
    return subprocess.run(["redis-cli", *args], capture_output=True, text=True, timeout=timeout).stdout


class LocalCluster:
    def __init__(self, workdir: Path, masters: int = 3, fsync: str = "always"):
        self.server, self.cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if self.server is None or self.cli is None:
            raise ClusterUnavailable("no redis-server / redis-cli binary on this machine (apt-get install "
                                     "redis-server); CI installs it")
        self.workdir, self.masters, self.fsync = Path(workdir), masters, fsync
        self.ports: list[int] = []
        self.procs: list[subprocess.Popen] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}"

    def start(self, timeout: float = 60.0) -> LocalCluster:
        self.ports = cluster_ports(self.masters)
        for port in self.ports:
            d = self.workdir / f"node-{port}"
            d.mkdir(parents=True, exist_ok=True)
            self.procs.append(subprocess.Popen(
                [str(self.server), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(d),
                 "--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf",
                 "--cluster-node-timeout", "5000", "--appendonly", "yes", "--appendfsync", self.fsync,
                 "--save", "", "--daemonize", "no", "--logfile", str(d / "redis.log")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + timeout
        try:
            for port, proc in zip(self.ports, self.procs):
                while _cli("-p", str(port), "ping").strip() != "PONG":
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"redis-server on {port} did not start; see {self.workdir}")
                    time.sleep(0.05)
            made = subprocess.run([str(self.cli), "--cluster", "create", *[f"127.0.0.1:{p}" for p in self.ports],
                                   "--cluster-replicas", "0", "--cluster-yes"],
                                  capture_output=True, text=True, timeout=timeout)
            if made.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed: {made.stdout[-2000:]}{made.stderr[-2000:]}")
            while not all(self._ready(p) for p in self.ports):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the cluster on {self.ports} did not reach cluster_state:ok in {timeout} s")
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self, port: int) -> bool:
        info = _cli("-p", str(port), "cluster", "info")
        return "cluster_state:ok" in info and f"cluster_known_nodes:{self.masters}" in info

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.procs = []

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
