"""The device reads at most the declared length: a longer or endless body is refused, not buffered.

A real HTTP server on loopback (http.server) plays the forging server; the real Transport reads it.
"""

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pocketrank.edge_runtime import IntegrityError
from pocketrank.edge_runtime.transport import Transport

DECLARED = 10_000


class Forger(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if self.path == "/endless":  # no length, bytes until the client hangs up
            self.end_headers()
            try:
                while True:
                    self.wfile.write(b"\0" * 65536)
            except OSError:
                return
        body = b"\1" * (DECLARED if self.path == "/exact" else DECLARED + 1)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def forger():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Forger)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield Transport(f"http://127.0.0.1:{server.server_port}")
    server.shutdown()


def test_the_declared_length_is_read(forger):
    data, ranged = forger.get_bytes("/exact", timeout=5, limit=DECLARED)
    assert len(data) == DECLARED and not ranged


def test_one_byte_past_the_declared_length_is_refused(forger):
    with pytest.raises(IntegrityError, match=f"past the declared {DECLARED} bytes"):
        forger.get_bytes("/longer", timeout=5, limit=DECLARED)


def test_an_endless_body_is_cut_at_the_declared_length_not_at_the_timeout(forger):
    t = time.monotonic()
    with pytest.raises(IntegrityError, match="past the declared"):
        forger.get_bytes("/endless", timeout=30, limit=DECLARED)
    assert time.monotonic() - t < 10  # refused as soon as the bytes ran over, not after 30 s
