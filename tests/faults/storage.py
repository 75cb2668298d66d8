"""What the storage fault tests share: the mark that skips them without user namespaces, and an upload counter."""

from __future__ import annotations

import pytest

from bench._storagechild import namespaces_work, run_child  # noqa: F401  (the tests' one way in)

needs_namespaces = pytest.mark.skipif(not namespaces_work(), reason="needs unshare -rm (user namespaces) to mount "
                                                                    "a small tmpfs")


def count_uploads(server) -> list[int]:
    """A counter of POST /v1/events requests the live server answers (registered before its first request)."""
    from flask import request

    seen = [0]

    @server.app.before_request
    def _count() -> None:
        if request.method == "POST" and request.path == "/v1/events":
            seen[0] += 1

    return seen
