"""The SDK's errors: the project's one hierarchy (pocketrank.shared.errors) plus what only a device meets.

Every error an EdgeClient raises on purpose derives from PocketrankError, so an
app can catch that one type.
"""

from __future__ import annotations

from pocketrank.shared.errors import (  # re-exported: the SDK's whole hierarchy in one place
    IntegrityError,
    ModelError,
    PocketrankError,
    SignatureError,
    TransportError,
    ValidationError,
)

# SQLite result codes that mean the storage, not the statement, is at fault.
STORAGE_CODES = ("SQLITE_FULL", "SQLITE_IOERR", "SQLITE_READONLY", "SQLITE_CORRUPT", "SQLITE_NOTADB",
                 "SQLITE_CANTOPEN", "SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_PERM")


class StorageError(PocketrankError):
    """The device's storage refused a write (disk full, read-only, corrupt database).

    Whatever the write belonged to did not happen: a sync leaves the previous
    version serving, a track() that raises this did not record the event.
    """


__all__ = ["IntegrityError", "ModelError", "PocketrankError", "SignatureError", "StorageError", "TransportError",
           "ValidationError"]
