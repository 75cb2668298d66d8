"""The phone's network, played by a TCP proxy on loopback: online, poor, offline, or a chosen fault.

The device app's EdgeClient talks to the server through this proxy, and so do the
fault tests (tests/faults), so the SDK meets real sockets that are slow, dropped,
refused or cut, not a flag it could peek at.

The phone's modes (the demo page switches between them with `set_mode`):

- online: bytes pass straight through.
- poor: every chunk is delivered `delay` seconds late in each direction (so a
  request/response round trip costs 2 x delay more), and each chunk from the
  device is lost with probability `loss`, which cuts the connection, as a flaky
  mobile link does.
- offline: open connections are cut and new ones are reset at once.

The faults the tests make (`set(mode, **params)`; "pass" is online, "reset" is offline):

- delay: hold each chunk of the response for `delay` seconds (requests pass at once, nothing is lost);
- trickle: forward the response in `piece`-byte pieces, `delay` seconds apart (a crawling link);
- blackhole: accept and read, never answer (a dead route);
- cut: forward the request, then only the first `cut_after` bytes of the response, then reset
  (only for requests whose path starts with `cut_path`; every request when it is "");
- lose_ack: forward the request, then reset as the response starts (the server did the work);
- busy: answer 503 with a Retry-After header without asking the server (a load balancer shedding);
- rewrite: a man in the middle that reads each whole HTTP response and passes it through
  `rewrite(path, status, body)`, which returns None (unchanged), new body bytes, a (status, body)
  pair, or an iterator of byte chunks (sent chunked, for as long as it yields: an endless answer).
  `path` is the request's path with its query string. The tests and `bench attack sync` use it to
  drop, replay or forge parts of a sync answer on a real socket between a real client and server.

`set_mode` cuts open connections only when going offline (a phone's link turning poor
keeps its sockets); `set` cuts every open connection, as a real network change would,
and `flap` switches between modes every period until `steady`.
"""

from __future__ import annotations

import http
import queue
import random
import socket
import struct
import threading
import time
from collections.abc import Callable

MODES = ("online", "poor", "offline")  # the phone's: what the demo page offers
FAULTS = ("pass", "delay", "trickle", "blackhole", "reset", "cut", "lose_ack", "busy", "rewrite")
_ALIASES = {"pass": "online", "reset": "offline"}
_PARAMS = ("delay", "loss", "piece", "cut_after", "cut_path", "retry_after", "rewrite")
_METHODS = (b"GET", b"POST", b"PUT", b"DELETE", b"HEAD", b"PATCH", b"OPTIONS")
_CHUNK = 65536


def _reset(sock: socket.socket) -> None:
    """Close with RST (linger 0), so the peer fails at once instead of waiting.

    shutdown() first: close() alone does not wake another thread blocked in recv() on
    the socket, and the peer would then see nothing until its own timeout."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class _Link:
    """One device connection and its upstream twin: a reader and a delayed writer each way."""

    def __init__(self, proxy: NetProxy, down: socket.socket, up: socket.socket):
        self.proxy, self.down, self.up = proxy, down, up
        self.closed = False
        self._lock = threading.Lock()
        self._queues: list[queue.Queue] = []
        self._ended = 0  # directions whose end of stream has been delivered
        self.path = ""  # the path of the request being answered (requests on one connection come one at a time)
        self.sent = 0  # response bytes sent for that request
        self._response = bytearray()  # rewrite: the response read so far, until it is whole

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
                q.put((0.0, None, ""))  # end of stream: half-close the other side once delivered
                return
            if upstream and data[:8].split(b" ")[0] in _METHODS:
                head = data.split(b"\r\n\r\n", 1)[0].decode(errors="replace")
                self.proxy.requests.append(head)
                self.path, self.sent = head.split(" ")[1] if " " in head else "", 0
            mode, delay, lost = self.proxy._weather(upstream)
            if mode == "offline" or lost:
                if lost:
                    self.proxy._count("lost", 1)
                self.cut()
                return
            q.put((time.monotonic() + delay, data, mode))

    def _write(self, dst: socket.socket, q: queue.Queue, upstream: bool) -> None:
        while True:
            due, data, mode = q.get()
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            if self.closed:
                return
            if data is None:
                if not upstream and self._response:  # a response delimited by the end of the stream
                    try:
                        self._rewrite(dst, b"", ended=True)
                    except OSError:
                        pass
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                self._end()
                return
            try:
                if upstream or not self._send_response(dst, data, mode):
                    dst.sendall(data)
            except OSError:
                self.cut()
                return
            if self.closed:
                return
            self.proxy._count("bytes_up" if upstream else "bytes_down", len(data))

    def _send_response(self, dst: socket.socket, data: bytes, mode: str) -> bool:
        """The response-side faults; False when `data` is to be sent as it is."""
        p = self.proxy
        if mode == "lose_ack":
            self.cut()
            return True
        if mode == "rewrite":
            self._rewrite(dst, data)
            return True
        if mode == "trickle":
            for i in range(0, len(data), p.piece):
                dst.sendall(data[i : i + p.piece])
                time.sleep(p.delay)
            return True
        if mode == "cut" and self.path.startswith(p.cut_path):
            data = data[: max(0, p.cut_after - self.sent)]
            dst.sendall(data)
            self.sent += len(data)
            if self.sent >= p.cut_after:
                self.cut()
            return True
        self.sent += len(data)
        return False

    def _rewrite(self, dst: socket.socket, data: bytes, ended: bool = False) -> None:
        """Collect the response; each time one is whole, send what the proxy's `rewrite` makes of it."""
        self._response += data
        while True:
            got = _whole_response(self._response, ended)
            if got is None:
                return
            status, headers, body, used = got
            del self._response[:used]
            out = self.proxy.rewrite(self.path, status, body) if self.proxy.rewrite else None
            if isinstance(out, tuple):
                status, out = out
            _send_response(dst, status, headers, body if out is None else out)

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
            q.put((0.0, None, ""))  # wake the writers so their threads end
        self.proxy._forget(self)


class NetProxy:
    """`NetProxy(("127.0.0.1", server_port)).start()`; point the client at `proxy.url`."""

    def __init__(self, target: tuple[str, int], host: str = "127.0.0.1", port: int = 0,
                 delay: float = 0.4, loss: float = 0.15, seed: int | None = None):
        self.target = target
        self.delay = delay
        self.loss = loss
        self.piece = 64  # trickle: bytes per piece
        self.cut_after = 0  # cut: response bytes let through
        self.cut_path = ""  # cut: only requests whose path starts with this
        self.retry_after = "1"  # busy: the Retry-After header
        self.rewrite: Callable | None = None  # rewrite: (path, status, body) -> None | body | (status, body) | chunks
        self.mode = "online"
        self.attempts = 0  # every connection accepted, refused or not (backing off means not even trying)
        self.requests: list[str] = []  # request heads seen, for tests to check (e.g. a Range header)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._links: set[_Link] = set()
        self._held: set[socket.socket] = set()  # blackholed or busy connections: not links
        self._stats = {"bytes_up": 0, "bytes_down": 0, "connections": 0, "refused": 0, "lost": 0}
        self._listener = socket.create_server((host, port))
        self.host, self.port = self._listener.getsockname()[:2]
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._flapper: threading.Thread | None = None
        self._stop_flapping = threading.Event()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> NetProxy:
        self._thread = threading.Thread(target=self._accept, name="netproxy", daemon=True)
        self._thread.start()
        return self

    def set_mode(self, mode: str) -> None:
        """The phone's link: online, poor or offline; only offline cuts open connections."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        with self._lock:
            self.mode = mode
        if mode == "offline":
            self._cut_all()

    def set(self, mode: str, **params) -> NetProxy:
        """A network change: any mode or fault, with its parameters; cuts every open connection."""
        if mode not in MODES + FAULTS:
            raise ValueError(f"mode must be one of {', '.join(MODES + FAULTS)}, got {mode!r}")
        unknown = set(params) - set(_PARAMS)
        if unknown:
            raise TypeError(f"unknown proxy parameters {sorted(unknown)}; known: {', '.join(_PARAMS)}")
        with self._lock:
            self.mode = _ALIASES.get(mode, mode)
            for key, value in params.items():
                setattr(self, key, value)
        self._cut_all()
        return self

    def flap(self, modes: tuple[str, ...], period: float) -> None:
        """Switch between `modes` (as `set` does) every `period` seconds until steady() or close()."""
        stop = self._stop_flapping = threading.Event()

        def run() -> None:
            i = 0
            while not stop.wait(period) and not self._stopping:
                i += 1
                self.set(modes[i % len(modes)])

        self.set(modes[0])
        self._flapper = threading.Thread(target=run, daemon=True)
        self._flapper.start()

    def steady(self, mode: str = "online") -> None:
        """Stop flapping and stay in `mode`."""
        if self._flapper is not None:
            self._stop_flapping.set()
            self._flapper.join()
            self._flapper = None
        self.set(mode)

    def stats(self) -> dict:
        with self._lock:
            return {"mode": self.mode, "delay_s": self.delay, "loss": self.loss, "open": len(self._links),
                    **self._stats}

    def close(self) -> None:
        self._stopping = True
        self._stop_flapping.set()
        self.set_mode("offline")
        try:
            self._listener.close()
        except OSError:
            pass

    def __enter__(self) -> NetProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # --- internals ---

    def _weather(self, upstream: bool) -> tuple[str, float, bool]:
        with self._lock:
            mode = self.mode
            lost = mode == "poor" and upstream and self._rng.random() < self.loss
        late = mode == "poor" or (mode == "delay" and not upstream)
        return mode, (self.delay if late else 0.0), lost

    def _count(self, key: str, n: int) -> None:
        with self._lock:
            self._stats[key] += n

    def _forget(self, link: _Link) -> None:
        with self._lock:
            self._links.discard(link)

    def _cut_all(self) -> None:
        with self._lock:
            links, held = list(self._links), list(self._held)
            self._held = set()
        for link in links:
            link.cut()
        for sock in held:
            _reset(sock)

    def _accept(self) -> None:
        while not self._stopping:
            try:
                down, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.attempts += 1
                mode = self.mode
            if mode == "offline":
                self._count("refused", 1)
                _reset(down)
                continue
            if mode in ("blackhole", "busy"):
                with self._lock:
                    self._held.add(down)
                threading.Thread(target=self._hold, args=(down, mode), daemon=True).start()
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

    def _hold(self, sock: socket.socket, mode: str) -> None:
        """blackhole: read and never answer; busy: answer 503 without asking the server."""
        try:
            if mode == "blackhole":
                while sock.recv(_CHUNK):
                    pass
            else:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = sock.recv(_CHUNK)
                    if not chunk:
                        break
                    data += chunk
                body = b'{"error":"service_unavailable","message":"shedding load"}'
                sock.sendall(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: " + str(self.retry_after).encode()
                             + b"\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: "
                             + str(len(body)).encode() + b"\r\n\r\n" + body)
        except OSError:
            pass
        finally:
            with self._lock:
                self._held.discard(sock)
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                sock.close()
            except OSError:
                pass


def _whole_response(buf: bytearray, ended: bool) -> tuple[int, list[tuple[str, str]], bytes, int] | None:
    """(status, headers, body, bytes used) of the HTTP/1.1 response at the start of `buf` once it is whole
    (Content-Length, chunked, or, when `ended`, delimited by the end of the stream); None until then."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = [(k.strip(), v.strip()) for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)]
    named = {k.lower(): v for k, v in headers}
    start = end + 4
    if status in (204, 304) or status < 200:
        return status, headers, b"", start
    if "chunked" in named.get("transfer-encoding", "").lower():
        body, at = bytearray(), start
        while True:
            eol = buf.find(b"\r\n", at)
            if eol < 0:
                return None
            size = int(bytes(buf[at:eol]).split(b";")[0], 16)
            if size == 0:
                trailer = buf.find(b"\r\n\r\n", eol)
                return (status, headers, bytes(body), trailer + 4) if trailer >= 0 else None
            if len(buf) < eol + 2 + size + 2:
                return None
            body += buf[eol + 2 : eol + 2 + size]
            at = eol + 2 + size + 2
    if "content-length" in named:
        n = int(named["content-length"])
        return (status, headers, bytes(buf[start : start + n]), start + n) if len(buf) >= start + n else None
    return (status, headers, bytes(buf[start:]), len(buf)) if ended else None


def _send_response(dst: socket.socket, status: int, headers: list[tuple[str, str]], body) -> None:
    """One response with the server's headers, its length (or chunked encoding, for an iterator) set anew."""
    keep = [(k, v) for k, v in headers if k.lower() not in ("content-length", "transfer-encoding")]
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    chunked = not isinstance(body, (bytes, bytearray))
    if chunked:
        keep.append(("Transfer-Encoding", "chunked"))
    elif status not in (204, 304):
        keep.append(("Content-Length", str(len(body))))
    head = f"HTTP/1.1 {status} {phrase}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in keep) + "\r\n"
    dst.sendall(head.encode("latin-1"))
    if not chunked:
        if status not in (204, 304):
            dst.sendall(bytes(body))
        return
    for piece in body:
        if piece:
            dst.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
    dst.sendall(b"0\r\n\r\n")
