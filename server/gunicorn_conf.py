"""gunicorn settings for pocketrank (`-c python:server.gunicorn_conf`).

Workers are stateless (the state is in the store), so any number behind a
load balancer answer alike. The app is not preloaded: each worker opens its own
store connections after the fork, as SQLite and redis-py require.

Facing clients, run it behind a buffering proxy: deploy/start.sh (the Docker
image's command) puts nginx in front with deploy/nginx.conf. A gthread worker's
threads read request bodies themselves, so a handful of clients trickling a
body a byte a second hold all 2 x 4 threads and /healthz stops answering;
nginx reads every request whole first (tests/server/test_slow_clients.py).
"""

import os

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
