"""pocketrank edge runtime: the SDK an app embeds.

Caches candidate lists, item vectors and the int8 ONNX ranker on the device
(SQLite and content-addressed files), keeps on-device user state, reranks
locally when the network is poor, and uploads events exactly once. Never
imports torch; onnxruntime is imported on the first rerank.

The names below load on first use (PEP 562), so `pocketrank.edge_runtime.cli` can be
imported by the `pocketrank` command without pulling in numpy or httpx.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "EdgeClient": "client",
    "FlushResult": "results",
    "Recommendation": "results",
    "RecommendedItem": "results",
    "SyncResult": "results",
    "IntegrityError": "errors",
    "ModelError": "errors",
    "PocketrankError": "errors",
    "SignatureError": "errors",
    "StorageError": "errors",
    "TransportError": "errors",
    "ValidationError": "errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'edge_runtime' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
