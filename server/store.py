"""The server's store. The implementations live in server/stores/; this name stays for
the batch jobs, which open the home's SQLite file as `Store(path)`."""

from .stores import CONSUMED_TYPES, open_store
from .stores.sqlite import SQLiteStore as Store

__all__ = ["CONSUMED_TYPES", "Store", "open_store"]
