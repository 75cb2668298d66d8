"""Server configuration, from keyword arguments or POCKETRANK_* environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from . import default_home


def _env(name: str, default, cast):
    raw = os.environ.get(f"POCKETRANK_{name.upper()}")
    return default if raw is None else cast(raw)


@dataclass
class Config:
    home: Path = field(default_factory=default_home)
    max_body_bytes: int = 1 << 20  # 1 MiB per request body
    max_events_per_batch: int = 500
    max_users_per_sync: int = 50
    default_k: int = 10
    max_k: int = 100
    n_candidates: int = 200
    max_per_category: int | None = None  # business rule; None means no cap

    @classmethod
    def from_env(cls, **overrides) -> "Config":
        values = {}
        for f in fields(cls):
            if f.name in overrides:
                values[f.name] = overrides[f.name]
            elif f.name == "home":
                values["home"] = Path(_env("home", default_home(), str))
            elif f.name == "max_per_category":
                values[f.name] = _env(f.name, None, int)
            else:
                values[f.name] = _env(f.name, f.default, int)
        return cls(**values)
