"""The network proxy: online passes bytes, poor delays them, offline cuts and refuses."""

import socket
import threading
import time

import pytest

from pocketrank.demo_app.netproxy import NetProxy


@pytest.fixture
def echo():
    """A loopback echo server: what the proxy stands in front of."""
    srv = socket.create_server(("127.0.0.1", 0))

    def serve():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=pump, args=(conn,), daemon=True).start()

    def pump(conn):
        with conn:
            try:
                while data := conn.recv(4096):
                    conn.sendall(data)
            except OSError:
                pass  # the proxy cut the connection: that is what these tests do

    threading.Thread(target=serve, daemon=True).start()
    yield srv.getsockname()[:2]
    srv.close()


def roundtrip(port: int, payload: bytes = b"ping", timeout: float = 3.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(payload)
        return s.recv(4096)


def test_online_passes_bytes_and_counts_them(echo):
    with NetProxy(echo) as proxy:
        assert roundtrip(proxy.port, b"hello") == b"hello"
        time.sleep(0.05)
        stats = proxy.stats()
        assert stats["bytes_up"] == 5 and stats["bytes_down"] == 5 and stats["connections"] == 1


def test_poor_adds_latency_each_way(echo):
    with NetProxy(echo, delay=0.15, loss=0.0) as proxy:
        proxy.set_mode("poor")
        start = time.monotonic()
        assert roundtrip(proxy.port) == b"ping"
        assert time.monotonic() - start >= 0.3


def test_poor_loses_requests(echo):
    with NetProxy(echo, delay=0.0, loss=1.0) as proxy:
        proxy.set_mode("poor")
        with pytest.raises(OSError):
            if not roundtrip(proxy.port):  # a cut connection reads as EOF or a reset
                raise ConnectionResetError
        assert proxy.stats()["lost"] == 1


def test_offline_refuses_new_and_cuts_open_connections(echo):
    with NetProxy(echo) as proxy:
        open_conn = socket.create_connection(("127.0.0.1", proxy.port), timeout=3)
        open_conn.sendall(b"a")
        assert open_conn.recv(10) == b"a"
        proxy.set_mode("offline")
        with pytest.raises(OSError):
            open_conn.sendall(b"b")
            if not open_conn.recv(10):
                raise ConnectionResetError
        open_conn.close()
        start = time.monotonic()
        with pytest.raises(OSError):
            if not roundtrip(proxy.port):
                raise ConnectionResetError
        assert time.monotonic() - start < 1.0  # refused at once, no timeout to wait for
        proxy.set_mode("online")
        assert roundtrip(proxy.port) == b"ping"


def test_unknown_mode_is_refused(echo):
    with NetProxy(echo) as proxy, pytest.raises(ValueError, match="online, poor, offline"):
        proxy.set_mode("flaky")


def test_closed_connections_are_forgotten(echo):
    with NetProxy(echo) as proxy:
        for _ in range(3):
            assert roundtrip(proxy.port) == b"ping"
        deadline = time.monotonic() + 3
        while proxy.stats()["open"] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proxy.stats()["open"] == 0 and proxy.stats()["connections"] == 3
