"""The phone's network, played by a TCP proxy on loopback: online, poor or offline.

The device app's EdgeClient talks to the server through this proxy, so the SDK
meets real sockets that are slow, dropped or refused, not a flag it could peek at.

- online: bytes pass straight through.
- poor: every chunk is delivered `delay` seconds late in each direction (so a
  request/response round trip costs 2 x delay more), and each chunk from the
  device is lost with probability `loss`, which cuts the connection, as a flaky
  mobile link does.
- offline: open connections are cut and new ones are reset at once.
"""

from __future__ import annotations

import queue
import random
import socket
import struct
import threading
import time

MODES = ("online", "poor", "offline")
_CHUNK = 65536


def _reset(sock: socket.socket) -> None:
    """Close with RST (linger 0), so the peer fails at once instead of waiting."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class _Link:
    """One device connection and its upstream twin: a reader and a delayed writer each way."""

    def __init__(self, proxy: "NetProxy", down: socket.socket, up: socket.socket):
        self.proxy, self.down, self.up = proxy, down, up
        self.closed = False
        self._lock = threading.Lock()
        self._queues: list[queue.Queue] = []
        self._ended = 0  # directions whose end of stream has been delivered

    def start(self) -> None:
        for src, dst, upstream in ((self.down, self.up, True), (self.up, self.down, False)):
            q: queue.Queue = queue.Queue()
            self._queues.append(q)
            threading.Thread(target=self._read, args=(src, q, upstream), daemon=True).start()
            threading.Thread(target=self._write, args=(dst, q, upstream), daemon=True).start()

    def _read(self, src: socket.socket, q: queue.Queue, upstream: bool) -> None:
        while not self.closed:
            try:
                data = src.recv(_CHUNK)
            except OSError:
                data = b""
            if not data:
                q.put((0.0, None))  # end of stream: half-close the other side once delivered
                return
            mode, delay, lost = self.proxy._weather(upstream)
            if mode == "offline" or lost:
                if lost:
                    self.proxy._count("lost", 1)
                self.cut()
                return
            q.put((time.monotonic() + delay, data))

    def _write(self, dst: socket.socket, q: queue.Queue, upstream: bool) -> None:
        while True:
            due, data = q.get()
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            if self.closed:
                return
            if data is None:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                self._end()
                return
            try:
                dst.sendall(data)
            except OSError:
                self.cut()
                return
            self.proxy._count("bytes_up" if upstream else "bytes_down", len(data))

    def _end(self) -> None:
        """Both ways ended normally: close quietly (no reset) and forget the link."""
        with self._lock:
            self._ended += 1
            if self._ended < 2 or self.closed:
                return
            self.closed = True
        for sock in (self.down, self.up):
            try:
                sock.close()
            except OSError:
                pass
        self.proxy._forget(self)

    def cut(self) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
        _reset(self.down)
        _reset(self.up)
        for q in self._queues:
            q.put((0.0, None))  # wake the writers so their threads end
        self.proxy._forget(self)


class NetProxy:
    """`NetProxy(("127.0.0.1", server_port)).start()`; point the client at `proxy.url`."""

    def __init__(self, target: tuple[str, int], host: str = "127.0.0.1", port: int = 0,
                 delay: float = 0.4, loss: float = 0.15, seed: int | None = None):
        self.target = target
        self.delay = delay
        self.loss = loss
        self.mode = "online"
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._links: set[_Link] = set()
        self._stats = {"bytes_up": 0, "bytes_down": 0, "connections": 0, "refused": 0, "lost": 0}
        self._listener = socket.create_server((host, port))
        self.host, self.port = self._listener.getsockname()[:2]
        self._thread: threading.Thread | None = None
        self._stopping = False

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "NetProxy":
        self._thread = threading.Thread(target=self._accept, name="netproxy", daemon=True)
        self._thread.start()
        return self

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        with self._lock:
            self.mode = mode
            links = list(self._links) if mode == "offline" else []
        for link in links:
            link.cut()

    def stats(self) -> dict:
        with self._lock:
            return {"mode": self.mode, "delay_s": self.delay, "loss": self.loss, "open": len(self._links),
                    **self._stats}

    def close(self) -> None:
        self._stopping = True
        self.set_mode("offline")
        try:
            self._listener.close()
        except OSError:
            pass

    def __enter__(self) -> "NetProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # --- internals ---

    def _weather(self, upstream: bool) -> tuple[str, float, bool]:
        with self._lock:
            mode = self.mode
            lost = mode == "poor" and upstream and self._rng.random() < self.loss
        return mode, (self.delay if mode == "poor" else 0.0), lost

    def _count(self, key: str, n: int) -> None:
        with self._lock:
            self._stats[key] += n

    def _forget(self, link: _Link) -> None:
        with self._lock:
            self._links.discard(link)

    def _accept(self) -> None:
        while not self._stopping:
            try:
                down, _ = self._listener.accept()
            except OSError:
                return
            if self.mode == "offline":
                self._count("refused", 1)
                _reset(down)
                continue
            try:
                up = socket.create_connection(self.target, timeout=5)
                up.settimeout(None)
            except OSError:
                self._count("refused", 1)
                _reset(down)
                continue
            for s in (down, up):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = _Link(self, down, up)
            with self._lock:
                self._links.add(link)
                self._stats["connections"] += 1
            link.start()
