"""The WSGI entry point: `gunicorn -c python:pocketrank.server.gunicorn_conf pocketrank.server.wsgi:app`.

The Dockerfile's command and the tests' real server are this same line.
Configuration comes from POCKETRANK_* environment variables (server/config.py).
"""

import os

# One BLAS thread per process: exact retrieval is a 50,000 x 64 matrix-vector
# product, about half a millisecond on one core. OpenBLAS's own thread pool
# only adds hand-offs that stall for tens of milliseconds on busy cores, and
# every worker thread would share it. Set before numpy is first imported.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from . import logs  # noqa: E402
from .api.app import create_app  # noqa: E402

logs.configure()  # the process's log format: JSON lines unless stderr is a terminal (server/logs.py)
app = create_app()
