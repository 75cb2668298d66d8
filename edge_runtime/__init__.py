"""pocketrank edge runtime: the SDK an app embeds.

Caches candidate lists, item vectors and the int8 ONNX ranker in SQLite,
keeps on-device user state, reranks locally when the network is poor, and
uploads events exactly once. Never imports torch.
"""

from shared.errors import IntegrityError, PocketrankError, SignatureError, TransportError, ValidationError

from .client import EdgeClient, FlushResult, Recommendation, RecommendedItem, SyncResult

__all__ = [
    "EdgeClient",
    "FlushResult",
    "IntegrityError",
    "PocketrankError",
    "Recommendation",
    "RecommendedItem",
    "SignatureError",
    "SyncResult",
    "TransportError",
    "ValidationError",
]
