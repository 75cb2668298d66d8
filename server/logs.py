"""Log lines: one JSON object per line when stderr is not a terminal, each tagged with its request's id.

    POCKETRANK_LOG_FORMAT  json | text | auto (the default: json unless stderr is a terminal)
    POCKETRANK_LOG_LEVEL   the root level (info), as gunicorn's

A line logged while a request is handled carries `request_id` (server/api/observe.py sets it from a
valid `X-Request-ID` or a fresh one, and echoes it on the answer), so the lines of one request can be
found across workers and machines. No ANSI colour codes ever reach a JSON line: werkzeug colours its
development-server lines, and those escapes are stripped. gunicorn's own error and access logs use the
same formatter (server/gunicorn_conf.py).

This module imports nothing of Flask: the gunicorn master loads it before any app exists.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from contextvars import ContextVar
from typing import IO

REQUEST_ID: ContextVar[str | None] = ContextVar("pocketrank_request_id", default=None)
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# LogRecord's own attributes: anything else on a record came in `extra=` and goes into the line.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "request_id"}
_configured = False


def wants_json(stream: IO | None = None, env: dict | None = None) -> bool:
    fmt = (env if env is not None else os.environ).get("POCKETRANK_LOG_FORMAT", "auto").strip().lower()
    if fmt in ("json", "text"):
        return fmt == "json"
    stream = stream if stream is not None else sys.stderr
    isatty = getattr(stream, "isatty", None)
    return not (isatty is not None and isatty())


class RequestIdFilter(logging.Filter):
    """Tags each record with the id of the request it was logged in (None outside one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """{"ts", "level", "logger", "message", "request_id", ...extra fields, "exc"}: one line, no colour."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"ts": round(record.created, 6),
                "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
                "level": record.levelname.lower(), "logger": record.name,
                "message": ANSI.sub("", record.getMessage()),
                "request_id": getattr(record, "request_id", None) or REQUEST_ID.get()}
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """For a terminal: the usual line with the request id in brackets, and no colour codes either."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get()
        return ANSI.sub("", super().format(record))


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (test runners swap it), like logging.lastResort."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property  # type: ignore[override]
    def stream(self) -> IO:
        return sys.stderr


def formatter(json_lines: bool | None = None) -> logging.Formatter:
    return JsonFormatter() if (wants_json() if json_lines is None else json_lines) else TextFormatter()


def configure(stream: IO | None = None, level: str | None = None, force: bool = False) -> None:
    """Give the root logger one stderr handler with the chosen format (once per process, unless `force`).
    The entry points call it (server/wsgi.py, `pocketrank serve`), not the app factory: an app made inside
    another program (a test, a notebook) leaves that program's logging alone.

    werkzeug's development server logs each request itself, outside the request: that line is left
    out because the app logs its own line per request, with the id."""
    global _configured
    if _configured and not force:
        return
    handler: logging.Handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    handler.setFormatter(formatter(wants_json(stream)))
    handler.addFilter(RequestIdFilter())
    handler.set_name("pocketrank")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "pocketrank"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel((level or os.environ.get("POCKETRANK_LOG_LEVEL", "info")).upper())
    werkzeug = logging.getLogger("werkzeug")
    if not any(isinstance(f, _NoRequestLines) for f in werkzeug.filters):
        werkzeug.addFilter(_NoRequestLines())
    _configured = True


class _NoRequestLines(logging.Filter):
    """Drops werkzeug's development-server line per request (WSGIRequestHandler.log_request), logged after
    the request and so without its id; the app's own line replaces it. Its other lines ("Running on") stay."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.rstrip().endswith('] "%s" %s %s'))

