"""The interactive demo's processes on loopback: server, network proxy, device app.

    server (python -m pocketrank serve)  <--  NetProxy (online | poor | offline)  <--  device app
                                                                                  (Flask + EdgeClient)
                                                                                        ^
                                                                                 browser: / and /operator

`pocketrank demo` and `python -m pocketrank.demo_app --serve` run `serve()`; the browser
tests and the screenshot command use `DemoStack` directly.
"""

from __future__ import annotations

import signal
import socket
import sys
import tempfile
import threading
from pathlib import Path

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from .device import Device
from .device_app import create_device_app
from .localserver import LocalServer, published
from .netproxy import NetProxy

DEMO_USERS = ("196", "186", "22")  # the first users in MovieLens-100k's ratings file
DEFAULT_PORT = 8765


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args, **kwargs) -> None:  # the page polls every second
        pass


def _port_or_free(host: str, port: int) -> int:
    """`port` if it can be bound, else any free one (the machine may be shared)."""
    with socket.socket() as s:
        try:
            s.bind((host, port))
            return port
        except OSError:
            s.bind((host, 0))
            return s.getsockname()[1]


class DemoStack:
    def __init__(self, home: Path, workdir: Path | None = None, users=DEMO_USERS, port: int = 0,
                 latency_budget: float = 0.25, delay: float = 0.4, loss: float = 0.15,
                 device_id: str = "demo-phone", host: str = "127.0.0.1"):
        self.home = Path(home)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if not workdir:
            self._tmp = tempfile.TemporaryDirectory(prefix="pocketrank-device-")
            workdir = Path(self._tmp.name)
        self.workdir = Path(workdir)
        self.users = list(users)
        self.host = host
        self.port = _port_or_free(host, port) if port else 0
        self.latency_budget, self.delay, self.loss, self.device_id = latency_budget, delay, loss, device_id
        self.server: LocalServer | None = None
        self.proxy: NetProxy | None = None
        self.device: Device | None = None
        self._http: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._http is not None  # the page's address exists once start() has run
        return f"http://{self.host}:{self._http.server_port}"

    def start(self) -> DemoStack:
        key_file = self.home / "keys" / "signing.pub"
        if not published(self.home):
            raise SystemExit(f"{self.home} has no published bundle: run `make demo` (or pocketrank train, "
                             "export, publish) first")
        try:
            self.server = LocalServer(self.home).start()
            self.proxy = NetProxy(("127.0.0.1", self.server.port), delay=self.delay, loss=self.loss).start()
            self.device = Device(self.workdir / "device.sqlite", key_file.read_text().strip(), self.proxy.url,
                                 self.users, device_id=self.device_id, latency_budget=self.latency_budget,
                                 traffic=self._traffic).start()
            app = create_device_app(self.device, self.proxy, self.server.url)
            self._http = make_server(self.host, self.port, app, threaded=True, request_handler=_QuietHandler)
            self._thread = threading.Thread(target=self._http.serve_forever, name="device-app", daemon=True)
            self._thread.start()
        except BaseException:
            self.stop()
            raise
        return self

    def _traffic(self) -> dict:
        assert self.proxy is not None  # the device samples this only while the stack runs
        stats = self.proxy.stats()
        return {"bytes_up": stats["bytes_up"], "bytes_down": stats["bytes_down"], "mode": stats["mode"]}

    def stop(self) -> None:
        if self._http:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self.device:
            self.device.close()
            self.device = None
        if self.proxy:
            self.proxy.close()
            self.proxy = None
        if self.server:
            self.server.stop()
            self.server = None
        if self._tmp:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> DemoStack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def serve(home: Path, port: int = DEFAULT_PORT, users=DEMO_USERS, latency_budget: float = 0.25,
          out=print) -> int:
    """Run the interactive demo until Ctrl-C."""
    with DemoStack(home, users=users, port=port, latency_budget=latency_budget) as stack:
        assert stack.server is not None and stack.proxy is not None  # start() made them
        out(f"\n== interactive demo (Ctrl-C stops)\n"
            f"   phone app      {stack.url}/\n"
            f"   operator page  {stack.url}/operator\n"
            f"   server         {stack.server.url}  (POCKETRANK_HOME={stack.home})\n"
            f"   network proxy  {stack.proxy.url}  (the phone's link; switch it in the page)\n"
            f"   demo users     {', '.join(stack.users)}")
        sys.stdout.flush()
        # SIGTERM stops it as Ctrl-C does, so the server process is never left behind.
        previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            out("\n   stopped")
        finally:
            signal.signal(signal.SIGTERM, previous)
    return 0


def _interrupt(*_) -> None:
    raise KeyboardInterrupt
