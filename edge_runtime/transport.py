"""HTTP transport with explicit timeouts; tests point it at Flask in-process or on loopback."""

from __future__ import annotations

from typing import Any

import httpx

from shared.errors import TransportError


class Transport:
    """Thin wrapper over one httpx.Client. Every call names its timeout."""

    def __init__(self, base_url: str = "http://127.0.0.1:8000", client: httpx.Client | None = None,
                 headers: dict[str, str] | None = None):
        self.client = client or httpx.Client(base_url=base_url, headers=headers or {})
        if client is not None and headers:
            self.client.headers.update(headers)

    def _call(self, method: str, url: str, timeout: float, **kwargs) -> httpx.Response:
        try:
            resp = self.client.request(method, url, timeout=timeout, **kwargs)
        except httpx.HTTPError as exc:
            raise TransportError(f"{method} {url} failed: {type(exc).__name__}: {exc}") from exc
        if resp.status_code >= 400:
            detail = resp.text[:300]
            err = TransportError(f"{method} {url} answered {resp.status_code}: {detail}")
            err.status_code = resp.status_code
            err.retry_after = _retry_after(resp)
            raise err
        return resp

    def get_json(self, url: str, timeout: float, params: dict | None = None,
                 headers: dict | None = None) -> tuple[int, Any]:
        resp = self._call("GET", url, timeout, params=params, headers=headers)
        if resp.status_code == 304:
            return 304, None
        try:
            return resp.status_code, resp.json()
        except ValueError as exc:
            raise TransportError(f"GET {url} answered non-JSON") from exc

    def post_json(self, url: str, body: Any, timeout: float) -> Any:
        resp = self._call("POST", url, timeout, json=body)
        try:
            return resp.json()
        except ValueError as exc:
            raise TransportError(f"POST {url} answered non-JSON") from exc

    def get_bytes(self, url: str, timeout: float, start: int = 0) -> tuple[bytes, bool]:
        """Fetch bytes from `start`; returns (data, ranged) where ranged means the server honoured Range."""
        headers = {"Range": f"bytes={start}-"} if start else None
        resp = self._call("GET", url, timeout, headers=headers)
        return resp.content, resp.status_code == 206

    def close(self) -> None:
        self.client.close()


def _retry_after(resp: httpx.Response) -> float | None:
    raw = resp.headers.get("Retry-After")
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None
