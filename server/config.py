"""Server configuration, from keyword arguments or POCKETRANK_* environment variables.

Every field is one setting; its environment variable is POCKETRANK_ plus the
name in capitals. The README's "Command line" section has the table.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from pocketrank.shared.errors import ValidationError

from . import default_home

STAGES = (0.05, 0.25, 0.5)
MIN_OPERATOR_KEY = 16  # characters; token_urlsafe(32) gives 43


def parse_stages(raw: str | tuple | list) -> tuple[float, ...]:
    """'0.05,0.25,0.5' -> (0.05, 0.25, 0.5); strictly increasing, each in (0, 1)."""
    try:
        stages = tuple(float(x) for x in (raw.replace(" ", "").split(",") if isinstance(raw, str) else raw) if x != "")
    except ValueError as exc:
        raise ValidationError("POCKETRANK_CANARY_STAGES", f"must be comma-separated shares, got {raw!r}") from exc
    if not stages or any(not 0 < s < 1 for s in stages) or list(stages) != sorted(set(stages)):
        raise ValidationError("POCKETRANK_CANARY_STAGES",
                              "must be increasing shares between 0 and 1, e.g. 0.05,0.25,0.5")
    return stages


def _int_list(raw: str) -> tuple[int, ...]:
    return tuple(int(x) for x in raw.replace(" ", "").split(",") if x)


def _boosts(raw: str) -> dict[int, float]:
    out = {}
    for part in raw.replace(" ", "").split(","):
        if part:
            item, factor = part.split(":")
            out[int(item)] = float(factor)
    return out


def _optional_int(raw: str) -> int | None:
    return None if raw.strip().lower() in ("", "none", "off") else int(raw)


_PARSERS: dict[str, Callable[[str], Any]] = {
    "Path": lambda raw: Path(raw).resolve(),
    "int": int,
    "float": float,
    "str": str.strip,
    "bool": lambda raw: {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}[
        raw.strip().lower()],
    "int | None": _optional_int,
    "tuple[int, ...]": _int_list,
    "dict[int, float]": _boosts,
}
_FORMATS = {"bool": "1/0, true/false or yes/no", "tuple[int, ...]": "a comma-separated list of item ids",
            "dict[int, float]": "comma-separated item_id:factor pairs, e.g. 12:1.5,40:2"}


# POCKETRANK_* variables read outside Config (so not its fields), by whom. Config.from_env refuses any other
# POCKETRANK_* name, so a typo (POCKETRANK_OPERATR_KEY) stops the start instead of silently running with
# the default; a new variable read anywhere must be added here (tests/server/test_config.py finds them all).
OTHER_VARIABLES: dict[str, str] = {
    "BIND": "server/gunicorn_conf.py: the address gunicorn listens on",
    "WORKERS": "server/gunicorn_conf.py: gunicorn worker processes",
    "THREADS": "server/gunicorn_conf.py: threads per worker",
    "ACCESS_LOG": "server/gunicorn_conf.py: gunicorn's access log",
    "LOG_LEVEL": "server/gunicorn_conf.py: gunicorn's log level",
    "LOG_FORMAT": "server/logs.py: json or text log lines (default: json unless stderr is a terminal)",
    "PORT": "deploy/start.sh: the port nginx listens on",
    "UPSTREAM_PORT": "deploy/start.sh: the loopback port gunicorn listens on behind nginx",
    "RUN_DIR": "deploy/start.sh: nginx's pid, rendered config and buffers",
    "DATA": "server/data/movielens.py: where MovieLens is cached",
    "DEVICE_DB": "edge_runtime/cli.py (pocketrank device --db)",
    "SERVER": "edge_runtime/cli.py (pocketrank device --server)",
    "PUBLIC_KEY": "edge_runtime/cli.py (pocketrank device --public-key)",
    "DEVICE_ID": "edge_runtime/cli.py (pocketrank device --device-id)",
    "DEVICE_TOKEN": "edge_runtime/cli.py (pocketrank device --token)",
    "TEST_REDIS_URL": "tests: the Redis the store tests use (.ci/run sets db 15)",
    "FUZZ_EXAMPLES": "tests/server/api/test_openapi.py: schemathesis examples per operation",
    "KILL_REPEATS": "tests/faults/test_kill.py: kills per kill point",
}


def known_variables() -> list[str]:
    """Every POCKETRANK_* name pocketrank reads: Config's fields and OTHER_VARIABLES."""
    return sorted([f"POCKETRANK_{f.name.upper()}" for f in fields(Config)]
                  + [f"POCKETRANK_{name}" for name in OTHER_VARIABLES])


def check_environment(environ: Mapping[str, str] | None = None) -> None:
    """Refuse a POCKETRANK_* variable nothing reads, naming the closest known one (a misspelt setting
    would otherwise be ignored, and the server would start with the default)."""
    known = known_variables()
    for var in sorted(os.environ if environ is None else environ):
        if var.startswith("POCKETRANK_") and var not in known:
            # Compared without the shared prefix, which would make every name look close.
            close = difflib.get_close_matches(var.removeprefix("POCKETRANK_"),
                                              [k.removeprefix("POCKETRANK_") for k in known], n=1, cutoff=0.6)
            hint = (f"did you mean POCKETRANK_{close[0]}?" if close
                    else "README.md's Settings table lists every setting")
            raise ValidationError(var, f"unknown setting; {hint}")


@dataclass
class Config:
    home: Path = field(default_factory=default_home)
    # requests
    max_body_bytes: int = 1 << 20  # 1 MiB per request body
    max_events_per_batch: int = 500
    max_items_per_batch: int = 500
    max_users_per_sync: int = 50
    max_clock_skew: float = 86_400.0  # s an event may lie in the future (device clocks drift)
    # stores
    store: str = "sqlite"  # or "redis"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "pocketrank:"
    # A Redis Cluster at POCKETRANK_REDIS_URL (any node's address) instead of one Redis; its event log is
    # this many streams, users spread over them (server/stores/redis_cluster.py; fixed when the store is made).
    redis_cluster: bool = False
    redis_partitions: int = 16
    dedupe_ttl_days: float = 35.0  # Redis keeps each event id this long; a device outbox keeps 30 days
    sqlite_synchronous: str = "full"  # "full": an acknowledged event survives a power cut; "normal": a process crash
    # real-time updater
    updater: str = "embedded"  # or "external": a separate `pocketrank updater` process folds events
    updater_batch: int = 2000  # events folded per store transaction
    recent_length: int = 50  # events kept in each user's recent sequence
    # serving
    refresh_seconds: float = 1.0  # how often a worker looks for a new model, bundle or catalogue
    stats_refresh_seconds: float = 10.0  # how often it rereads exposures and popularity
    default_k: int = 10
    max_k: int = 100
    n_candidates: int = 200
    # Retrieval by an approximate nearest-neighbour index (server/online/ann.py) from this many products;
    # below it the exact scan; 0 = always exact. docs/scaling.md says when to lower it.
    ann_min_items: int = 200_000
    # business rules
    max_per_category: int | None = None  # None: no cap
    exposure_cap: int = 1000  # impressions per item per day before the penalty starts
    exposure_penalty: float = 0.05  # score taken off per doubling past the cap
    explore_position: int = 0  # 1-based slot for one exploration item; 0 turns it off
    pinned_items: tuple[int, ...] = ()
    boosts: dict[int, float] = field(default_factory=dict)
    category_weight: float = 0.05  # weight of the user's 7-day category share (window features)
    # The popularity knob: the popular list's items have their click odds divided by e^(value * share), the
    # most popular's share 1, the n-th's 1/n; devices apply it too (the manifest's rules). 0 = off.
    popular_penalty: float = 0.0
    # canary rollouts (server/jobs/rollout.py)
    canary_check_seconds: float = 0.0  # `pocketrank serve` looks at a running canary this often; 0 = off
    canary_stages: str = "0.05,0.25,0.5"  # shares a healthy canary widens through before it is promoted
    # devices and operators
    # The operator's credential: device registration and revocation, catalogue writes, metrics.
    # "" = open, for development only; required (and long) once device tokens are.
    operator_key: str = ""
    require_device_token: bool = False
    sync_rate: float = 5.0  # sync requests per second per device, sustained; 0 = no sync limit
    sync_burst: int = 20
    # rate limits on every endpoint (server/api/ratelimit.py): per device token, else per address
    request_rate: float = 20.0  # requests per second per device token, sustained, all endpoints; 0 = off
    request_burst: int = 600
    address_rate: float = 100.0  # the same per address, for calls without a token (NAT, a backend); 0 = off
    address_burst: int = 6000
    rate_limit_storage: str = ""  # "" = the Redis URL with the Redis store, else memory:// (per worker)
    proxy_hops: int = 0  # trusted proxies in front that append to X-Forwarded-For (the Docker image: 1)
    sync_history: int = 10  # bundle versions whose record history is kept; older cursors get a full snapshot
    # batch jobs (publish, file imports) as Ray tasks (server/ray_tasks.py): "" = one process (the default),
    # "local" = a Ray started on this machine for the job, else a cluster's address (auto, ray://head:10001)
    ray_address: str = ""

    @classmethod
    def from_env(cls, **overrides) -> Config:
        check_environment()
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name in overrides:
                values[f.name] = overrides[f.name]
                continue
            var = f"POCKETRANK_{f.name.upper()}"
            raw = os.environ.get(var)
            if raw is None:
                continue
            try:
                ftype = str(f.type)  # a string: this module has `from __future__ import annotations`
                values[f.name] = _PARSERS[ftype](raw)
            except (ValueError, TypeError, KeyError) as exc:
                raise ValidationError(var, f"must be {_FORMATS.get(ftype, ftype)}, got {raw!r}") from exc
        config = cls(**values)
        config.check()
        return config

    def check(self) -> None:
        if self.store not in ("sqlite", "redis"):
            raise ValidationError("POCKETRANK_STORE", "must be sqlite or redis")
        if self.redis_cluster and self.store != "redis":
            raise ValidationError("POCKETRANK_REDIS_CLUSTER", "needs POCKETRANK_STORE=redis")
        if not 1 <= self.redis_partitions <= 1024:
            raise ValidationError("POCKETRANK_REDIS_PARTITIONS", "must be between 1 and 1024")
        if self.sqlite_synchronous not in ("full", "normal"):
            raise ValidationError("POCKETRANK_SQLITE_SYNCHRONOUS", "must be full or normal")
        if self.updater not in ("embedded", "external"):
            raise ValidationError("POCKETRANK_UPDATER", "must be embedded or external")
        if self.sync_history < 1:
            raise ValidationError("POCKETRANK_SYNC_HISTORY", "must be at least 1 (bundle versions kept)")
        if self.max_per_category is not None and self.max_per_category < 1:
            raise ValidationError("POCKETRANK_MAX_PER_CATEGORY", "must be unset (no cap) or at least 1")
        if not (math.isfinite(self.popular_penalty) and self.popular_penalty >= 0):
            raise ValidationError("POCKETRANK_POPULAR_PENALTY", "must be 0 (off) or a positive number (log-odds)")
        if self.explore_position < 0:
            raise ValidationError("POCKETRANK_EXPLORE_POSITION", "must be 0 (off) or a 1-based slot")
        if min(self.request_rate, self.request_burst, self.address_rate, self.address_burst, self.sync_rate,
               self.sync_burst) < 0:
            raise ValidationError("POCKETRANK_REQUEST_RATE", "rates and bursts must be 0 (off) or positive")
        if self.proxy_hops < 0:
            raise ValidationError("POCKETRANK_PROXY_HOPS", "must be 0 (no proxy) or the number of trusted proxies")
        if self.ann_min_items < 0:
            raise ValidationError("POCKETRANK_ANN_MIN_ITEMS", "must be 0 (always the exact scan) or a number of products")
        if self.canary_check_seconds < 0:
            raise ValidationError("POCKETRANK_CANARY_CHECK_SECONDS", "must be 0 (off) or a number of seconds")
        parse_stages(self.canary_stages)  # raises for a malformed POCKETRANK_CANARY_STAGES
        self.check_credentials()

    def check_credentials(self) -> None:
        """Device tokens without an operator key mean nothing: anyone could register a device for any user.

        So a server that requires tokens refuses to start without a key, and a key short enough to
        guess over the network is refused whenever one is set."""
        hint = "make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        if self.operator_key and len(self.operator_key) < MIN_OPERATOR_KEY:
            raise ValidationError("POCKETRANK_OPERATOR_KEY", f"must be at least {MIN_OPERATOR_KEY} characters; {hint}")
        if self.require_device_token and not self.operator_key:
            raise ValidationError("POCKETRANK_OPERATOR_KEY",
                                  "must be set when POCKETRANK_REQUIRE_DEVICE_TOKEN=1: without it anyone could "
                                  f"register, revoke or take over devices and change the catalogue; {hint}")

