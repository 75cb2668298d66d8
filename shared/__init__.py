"""Contracts both sides agree on: schemas, features, wire format, versions, errors.

Imports only the standard library, numpy, zstandard and pydantic (the request contract,
shared/models.py), so the edge runtime and the server can both depend on it without pulling
in torch or flask.
"""

from .errors import (
    AuthError,
    DataError,
    IntegrityError,
    ModelError,
    PocketrankError,
    SignatureError,
    TransportError,
    ValidationError,
)
from .schemas import EVENT_TYPES, Event, Item, validate_event, validate_item
from .wire import WIRE_VERSION

EMBEDDING_DIM = 64

__all__ = [
    "AuthError",
    "DataError",
    "EMBEDDING_DIM",
    "EVENT_TYPES",
    "Event",
    "IntegrityError",
    "Item",
    "ModelError",
    "PocketrankError",
    "SignatureError",
    "TransportError",
    "ValidationError",
    "WIRE_VERSION",
    "validate_event",
    "validate_item",
]
