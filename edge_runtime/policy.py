"""When to ask the server: only when it was recently reachable, with backoff after failures.

One policy object per kind of call (recommendations, uploads), so a failed
upload does not stop the next recommendation from trying, and the other way.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Connectivity:
    """Exponential backoff with full jitter; a server's Retry-After is honoured as a floor.

    A success halves the failure count instead of clearing it, so a flapping
    link (fail, succeed, fail, ...) keeps backing off longer rather than costing
    a full timeout on every other call. Backing off never blocks: allow() only
    answers whether to try now.
    """

    base_backoff: float = 1.0
    max_backoff: float = 60.0
    max_retry_after: float = 3600.0  # a hostile or broken header must not silence a device for days
    clock: Callable[[], float] = field(default=time.monotonic)
    rng: random.Random = field(default_factory=random.Random)
    failures: int = 0
    retry_at: float = 0.0
    server_retry_at: float = 0.0  # from Retry-After: survives reset()
    last_ok: float | None = None
    last_error: str | None = None
    last_failed: bool = False

    def allow(self) -> bool:
        return self.clock() >= self.retry_at

    def delay(self) -> float:
        """Seconds until allow() turns true."""
        return max(0.0, self.retry_at - self.clock())

    def success(self) -> None:
        self.failures //= 2
        self.retry_at = self.server_retry_at = 0.0
        self.last_ok = self.clock()
        self.last_failed = False

    def failure(self, retry_after: float | None = None, error: str | None = None) -> float:
        """Record a failure; returns the seconds to wait before the next try."""
        self.failures += 1
        cap = min(self.max_backoff, self.base_backoff * 2 ** (self.failures - 1))
        delay = self.rng.uniform(cap / 2, cap)
        now = self.clock()
        if retry_after is not None:
            wait = min(max(0.0, retry_after), self.max_retry_after)
            self.server_retry_at = now + wait
            delay = max(delay, wait)
        self.retry_at = now + delay
        self.last_error = error
        self.last_failed = True
        return delay

    def reset(self) -> None:
        """The OS says the network is back: try again now, unless the server asked us to wait."""
        self.retry_at = max(self.server_retry_at, 0.0)
        self.failures = 0

    @property
    def state(self) -> str:
        if not self.last_failed:
            return "online" if self.last_ok is not None else "unknown"
        return "backoff" if not self.allow() else "retry"
