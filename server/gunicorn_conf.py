"""gunicorn settings for pocketrank (`-c python:pocketrank.server.gunicorn_conf`).

Workers are stateless (the state is in the store), so any number behind a
load balancer answer alike. The app is not preloaded: each worker opens its own
store connections after the fork, as SQLite and redis-py require.

Facing clients, run it behind a buffering proxy: deploy/start.sh (the Docker
image's command) puts nginx in front with deploy/nginx.conf. A gthread worker's
threads read request bodies themselves, so a handful of clients trickling a
body a byte a second hold all 2 x 4 threads and /healthz stops answering;
nginx reads every request whole first (tests/server/test_slow_clients.py).

Observability: the workers count requests into prometheus_client's multiprocess files
(PROMETHEUS_MULTIPROC_DIR: given, or a fresh temporary directory; emptied when the
master starts, as prometheus_client requires), so `/metrics` sums every worker
whichever answers; `child_exit` drops a dead worker's live gauge. Logs are one
JSON object per line unless stderr is a terminal (server/logs.py), gunicorn's
error and access logs too; the access log carries the answer's X-Request-ID.
"""

import glob
import os
import tempfile

# Before prometheus_client is imported anywhere: it picks its multiprocess value class at import.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="pocketrank-metrics-")

from gunicorn.glogging import Logger  # noqa: E402

from pocketrank.server import logs  # noqa: E402
from pocketrank.server.monitoring.service import mark_dead  # noqa: E402

bind = os.environ.get("POCKETRANK_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("POCKETRANK_WORKERS", "2"))
# Threads per worker: requests spend part of their time waiting on the store
# (fsync, Redis round trips), and numpy/onnxruntime release the GIL while they score.
worker_class = "gthread"
threads = int(os.environ.get("POCKETRANK_THREADS", "4"))
preload_app = False
timeout = 60
graceful_timeout = 20
keepalive = 5
accesslog = os.environ.get("POCKETRANK_ACCESS_LOG") or None  # "-" for stdout
errorlog = "-"
loglevel = os.environ.get("POCKETRANK_LOG_LEVEL", "info")


class JsonLogger(Logger):
    """gunicorn's logger with server/logs.py's format on its error and access logs; each access line
    is a JSON object with the request's fields and the X-Request-ID the app answered with."""

    def setup(self, cfg):
        super().setup(cfg)
        fmt = logs.formatter()
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                handler.setFormatter(fmt)
                handler.addFilter(logs.RequestIdFilter())

    def access(self, resp, req, environ, request_time):
        if not self.access_log_enabled:
            return
        a = self.atoms(resp, req, environ, request_time)
        try:
            self.access_log.info("%s %s %s", a["m"], a["U"], a["s"], extra={
                "method": a["m"], "path": a["U"], "query": a["q"], "status": int(a["s"]), "bytes": a["B"],
                "duration_ms": a["D"] / 1000, "remote_addr": a["h"], "user_agent": a["a"],
                "request_id": a.get("{x-request-id}o")})
        except Exception:  # noqa: BLE001 - as gunicorn's own: an access line never fails a request
            self.exception("access log line failed")


logger_class = JsonLogger


def on_starting(server):
    """A new master: empty the metrics directory, so no count of a previous run is summed in."""
    for path in glob.glob(os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], "*.db")):
        os.remove(path)


def child_exit(server, worker):
    mark_dead(worker.pid)


def on_exit(server):
    # The directory this file made (not one the operator gave) goes with the master.
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
    if os.path.basename(path).startswith("pocketrank-metrics-"):
        import shutil

        shutil.rmtree(path, ignore_errors=True)
