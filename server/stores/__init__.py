"""Stores behind one interface: SQLite (the embedded default) and Redis, one server or a cluster (scale-out)."""

from __future__ import annotations

from pathlib import Path

from pocketrank.shared.errors import ValidationError

from .base import CONSUMED_TYPES, LogEntry, Store, Updates, UserContext, UserRecord
from .sqlite import SQLiteStore

BACKENDS = ("sqlite", "redis")


def open_store(config=None, *, home: Path | None = None) -> Store:
    """The store the configuration names (POCKETRANK_STORE): SQLite in the home, or Redis."""
    from ..config import Config

    config = config or Config.from_env(**({"home": home} if home else {}))
    if config.store == "redis" and config.redis_cluster:
        from .redis_cluster import RedisClusterStore

        return RedisClusterStore(config.redis_url, config.redis_prefix, config.dedupe_ttl_days,
                                 config.redis_partitions)
    if config.store == "redis":
        from .redis import RedisStore

        return RedisStore(config.redis_url, config.redis_prefix, config.dedupe_ttl_days)
    if config.store != "sqlite":
        raise ValidationError("POCKETRANK_STORE", f"must be one of {', '.join(BACKENDS)}")
    Path(config.home).mkdir(parents=True, exist_ok=True)
    return SQLiteStore(Path(config.home) / "store.sqlite", synchronous=config.sqlite_synchronous)


__all__ = ["CONSUMED_TYPES", "LogEntry", "SQLiteStore", "Store", "Updates", "UserContext", "UserRecord",
           "open_store"]
