"""A TCP proxy on loopback that sits between the SDK and a real server and misbehaves on demand.

Poor, flapping and offline networks are made here, at the socket level, not by
mocking the SDK's transport: the SDK's real httpx stack meets real delays,
resets, half-delivered responses and servers that never answer.

Modes (per connection, read when it is accepted; set() also cuts every open
connection, as a real network change would):

- pass: forward both ways;
- delay: hold each chunk of the response for `delay` seconds;
- blackhole: accept and read, never answer (a dead route);
- reset: accept, then close with RST (connection reset);
- trickle: forward the response in `piece`-byte pieces, `delay` seconds apart (a crawling link);
- cut: forward the request, then only the first `cut_after` bytes of the response, then close
  (only for requests whose path starts with `cut_path`, when that is set);
- lose_ack: forward the request, then close as the response starts (the server did the work);
- busy: answer 503 with a Retry-After header without asking the server (a load balancer shedding).
"""

from __future__ import annotations

import socket
import struct
import threading
import time

MODES = ("pass", "delay", "trickle", "blackhole", "reset", "cut", "lose_ack", "busy")


class FaultProxy:
    def __init__(self, upstream: tuple[str, int]):
        self.upstream = upstream
        self.mode = "pass"
        self.delay = 0.0
        self.cut_after = 0
        self.cut_path = ""
        self.piece = 64
        self.retry_after = "1"
        self.connections = 0
        self.requests: list[str] = []  # request heads seen, for tests to check (e.g. a Range header)
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._closed = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._flapper: threading.Thread | None = None
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set(self, mode: str, **params) -> "FaultProxy":
        assert mode in MODES, mode
        with self._lock:
            self.mode = mode
            for key, value in params.items():
                setattr(self, key, value)
            open_now, self._open = self._open, set()
        for s in open_now:
            _close(s, rst=True)
        return self

    def flap(self, modes: tuple[str, ...], period: float) -> None:
        """Switch between `modes` every `period` seconds until steady() or close()."""
        stop = self._stop_flapping = threading.Event()

        def run() -> None:
            i = 0
            while not stop.wait(period) and not self._closed.is_set():
                i += 1
                self.set(modes[i % len(modes)])

        self.set(modes[0])
        self._flapper = threading.Thread(target=run, daemon=True)
        self._flapper.start()

    def steady(self, mode: str = "pass") -> None:
        """Stop flapping and stay in `mode`."""
        if self._flapper is not None:
            self._stop_flapping.set()
            self._flapper.join()
            self._flapper = None
        self.set(mode)

    def close(self) -> None:
        self._closed.set()
        if self._flapper is not None:
            self._stop_flapping.set()
        self.listener.close()
        self.set(self.mode)

    # --- plumbing ---

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                mode = self.mode
                self.connections += 1
                self._open.add(client)
            threading.Thread(target=self._serve, args=(client, mode), daemon=True).start()

    def _serve(self, client: socket.socket, mode: str) -> None:
        try:
            if mode == "reset":
                _close(client, rst=True)
            elif mode == "blackhole":
                while client.recv(65536):
                    pass
            elif mode == "busy":
                _read_request_head(client)
                body = b'{"error":"service_unavailable","message":"shedding load"}'
                client.sendall(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: " + self.retry_after.encode()
                               + b"\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: "
                               + str(len(body)).encode() + b"\r\n\r\n" + body)
                _close(client)
            else:
                upstream = socket.create_connection(self.upstream)
                with self._lock:
                    self._open.add(upstream)
                current = {"path": "", "new": False}
                threading.Thread(target=self._forward, args=(client, upstream, current), daemon=True).start()
                self._respond(upstream, client, mode, current)
        except OSError:
            pass
        finally:
            _close(client)

    def _forward(self, client: socket.socket, upstream: socket.socket, current: dict) -> None:
        """Client to server, noting each request's path (requests on one connection come one at a time)."""
        try:
            while True:
                data = client.recv(65536)
                if not data:
                    break
                if data[:8].split(b" ")[0] in (b"GET", b"POST", b"PUT", b"DELETE", b"HEAD"):
                    head = data.split(b"\r\n\r\n", 1)[0].decode(errors="replace")
                    self.requests.append(head)
                    current["path"], current["new"] = head.split(" ")[1], True
                upstream.sendall(data)
        except OSError:
            pass
        finally:
            _close(upstream)

    def _respond(self, upstream: socket.socket, client: socket.socket, mode: str, current: dict) -> None:
        sent = 0
        try:
            while True:
                chunk = upstream.recv(65536)
                if not chunk:
                    break
                if current["new"]:
                    sent, current["new"] = 0, False
                if mode == "lose_ack":
                    _close(client, rst=True)
                    break
                if mode == "delay":
                    time.sleep(self.delay)
                if mode == "trickle":
                    for i in range(0, len(chunk), self.piece):
                        client.sendall(chunk[i : i + self.piece])
                        time.sleep(self.delay)
                    continue
                cutting = mode == "cut" and current["path"].startswith(self.cut_path)
                if cutting:
                    chunk = chunk[: max(0, self.cut_after - sent)]
                client.sendall(chunk)
                sent += len(chunk)
                if cutting and sent >= self.cut_after:
                    _close(client, rst=True)
                    break
        finally:
            _close(upstream)


def _read_request_head(sock: socket.socket) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return
        data += chunk


def _close(sock: socket.socket, rst: bool = False) -> None:
    # shutdown() first: close() alone does not wake another thread blocked in recv() on
    # the socket, and the peer would then see nothing until its own timeout.
    try:
        if rst:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass
