"""The one exception hierarchy of pocketrank.

Every error the project raises on purpose derives from PocketrankError, so an
app can catch one type. Messages say what went wrong and what to do about it.
"""


class PocketrankError(Exception):
    """Base of every error pocketrank raises on purpose."""


class ValidationError(PocketrankError, ValueError):
    """Input that does not match a contract. `field` names the bad field."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class DataError(PocketrankError):
    """A data set could not be fetched, verified or parsed."""


class IntegrityError(PocketrankError):
    """Bytes that do not match the sha256 or length they were promised with."""


class SignatureError(IntegrityError):
    """A manifest that is unsigned, wrongly signed, older than held, or expired."""


class ModelError(PocketrankError):
    """A model that is missing, malformed, or fails a parity gate."""


class AuthError(PocketrankError):
    """A missing, unknown or revoked device token (401), or a user the device may not see (403)."""

    def __init__(self, message: str, status: int = 401):
        self.status = status
        super().__init__(message)


class TransportError(PocketrankError):
    """The server could not be reached, timed out, or answered with an error."""

    # Set by pocketrank.edge_runtime.transport._error; class defaults for errors raised elsewhere.
    status_code: int | None = None
    retry_after: float | None = None
    partial: bytes = b""
    ranged: bool = False


class BundleUnavailable(PocketrankError):
    """No bundle can be served: none published yet, or its manifest missing or unreadable (a 503 to a device)."""
