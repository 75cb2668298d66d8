"""HTTP transport with explicit timeouts; tests point it at Flask in-process or at a server on loopback.

`timeout` is a deadline for the whole call, not for each network phase: a
server that trickles a response byte by byte is cut off at the deadline like
one that never answers. That is what lets recommend() promise its latency
budget. A download cut off part-way raises TransportError with the bytes that
did arrive in `partial`, so the caller can keep them and resume with Range.

Every JSON answer is capped: in bytes while it streams (MAX_JSON_BYTES; a sync answer names its own,
larger cap) and in nesting depth when parsed (pocketrank.shared.wire.loads, which also refuses NaN, Infinity and
numbers that overflow to them). An endless or hostile answer costs at most the cap and is never held
whole in memory; it is refused as a TransportError (the server's answer could not be used, like one
that is not JSON at all), so every caller's retry and backoff applies: flush() keeps its batch,
recommend() answers from the device. An artifact past its declared length is an IntegrityError.
"""

from __future__ import annotations

import email.utils
import json
import time
from typing import Any

import httpx

from pocketrank.shared import wire
from pocketrank.shared.errors import IntegrityError, TransportError

# An upload's or a recommendation's answer is a few KB (100 results, 100 items); 4 MiB leaves room and
# bounds what a hostile or endless answer costs.
MAX_JSON_BYTES = 4 * 1024 * 1024


def _error(message: str, status_code: int | None = None, retry_after: float | None = None,
           partial: bytes = b"", ranged: bool = False) -> TransportError:
    err = TransportError(message)
    err.status_code = status_code
    err.retry_after = retry_after
    err.partial = partial
    err.ranged = ranged
    return err


class Transport:
    """Thin wrapper over one httpx.Client. Every call names its timeout."""

    def __init__(self, base_url: str = "http://127.0.0.1:8000", client: httpx.Client | None = None,
                 headers: dict[str, str] | None = None):
        self.client = client or httpx.Client(base_url=base_url, headers=headers or {})
        if client is not None and headers:
            self.client.headers.update(headers)

    def _call(self, method: str, url: str, timeout: float, answers: tuple[int, ...] = (),
              limit: int | None = None, **kwargs) -> tuple[int, httpx.Headers, bytes]:
        """One request; the body is read as it streams and refused past `limit` bytes (a declared
        length), so a forged or endless body costs at most that much memory and a timeout."""
        deadline = time.monotonic() + timeout
        got: list[bytes] = []
        size = 0
        status, headers = 0, httpx.Headers()
        try:
            with self.client.stream(method, url, timeout=httpx.Timeout(timeout), **kwargs) as resp:
                status, headers = resp.status_code, resp.headers
                for chunk in resp.iter_bytes():
                    size += len(chunk)
                    if limit is not None and size > limit:
                        raise IntegrityError(f"{method} {url}: the body runs past the declared {limit} bytes; "
                                             "refused (a tampered or endless answer)")
                    got.append(chunk)
                    if time.monotonic() > deadline:
                        raise _error(f"{method} {url} took longer than its {timeout * 1000:.0f} ms deadline",
                                     partial=b"".join(got), ranged=status == 206)
        except httpx.HTTPError as exc:
            raise _error(f"{method} {url} failed: {type(exc).__name__}: {exc}", partial=b"".join(got),
                         ranged=status == 206) from exc
        body = b"".join(got)
        if status >= 400 and status not in answers:
            hint = "; the server refused this device: check its token and users" if status in (401, 403) else ""
            raise _error(f"{method} {url} answered {status}: {body[:300].decode(errors='replace')}{hint}", status,
                         _retry_after(headers.get("Retry-After")))
        return status, headers, body

    def get_json(self, url: str, timeout: float, params: dict | None = None,
                 headers: dict | None = None, limit: int = MAX_JSON_BYTES) -> tuple[int, Any]:
        """(status, parsed body); None for a 304. A body past `limit` bytes, not JSON, nested too deep or
        carrying a non-finite number raises TransportError."""
        status, _, body = self._json_call("GET", url, timeout, (), limit, params=params, headers=headers)
        if status == 304:
            return 304, None
        return status, _json(body, f"GET {url}")

    def post_json(self, url: str, body: Any, timeout: float, headers: dict | None = None,
                  answers: tuple[int, ...] = (), limit: int = MAX_JSON_BYTES) -> Any:
        """The JSON answer; statuses >= 400 raise TransportError, except those in `answers`,
        whose body is an answer too (POST /v1/events' 422 carries per-event results). Capped as get_json."""
        _, _, answer = self._json_call("POST", url, timeout, answers, limit, json=body, headers=headers)
        return _json(answer, f"POST {url}")

    def _json_call(self, method: str, url: str, timeout: float, answers: tuple[int, ...], limit: int,
                   **kwargs) -> tuple[int, httpx.Headers, bytes]:
        try:
            return self._call(method, url, timeout, answers, limit, **kwargs)
        except IntegrityError as exc:  # past the cap: a JSON answer has none declared, only the cap
            raise _error(f"{method} {url}: the answer runs past the {limit} bytes allowed; refused (a tampered "
                         "or endless answer)") from exc

    def get_bytes(self, url: str, timeout: float, start: int = 0, limit: int | None = None) -> tuple[bytes, bool]:
        """Fetch bytes from `start`; returns (data, ranged), ranged meaning the server honoured Range.
        `limit`: the most bytes the answer may carry (the artifact's declared length); more is refused."""
        headers = {"Range": f"bytes={start}-"} if start else None
        status, resp_headers, body = self._call("GET", url, timeout, headers=headers, limit=limit)
        if status == 206 and not resp_headers.get("Content-Range", "").startswith(f"bytes {start}-"):
            raise _error(f"GET {url}: asked for bytes from {start}, got {resp_headers.get('Content-Range')!r}")
        return body, status == 206

    def close(self) -> None:
        self.client.close()


def _json(body: bytes, what: str) -> Any:
    """The parsed answer, or TransportError: not JSON (an HTML page from a captive portal), or JSON no
    server of ours sends (nested too deep, NaN, Infinity, 1e400)."""
    try:
        return wire.loads(body, f"{what}'s answer")
    except IntegrityError as exc:
        plain = isinstance(exc.__cause__, (json.JSONDecodeError, UnicodeDecodeError))
        raise _error(f"{what} answered non-JSON" if plain else f"{exc}; refused") from exc


def _retry_after(raw: str | None) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date (RFC 9110 10.2.3)."""
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
