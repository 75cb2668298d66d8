"""When to ask the server: only when recently reachable, with backoff after failures."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field


@dataclass
class Connectivity:
    """Exponential backoff with full jitter after each failure; one success resets it."""

    base_backoff: float = 1.0
    max_backoff: float = 60.0
    clock: callable = field(default=time.monotonic)
    failures: int = 0
    retry_at: float = 0.0
    last_ok: float | None = None

    def allow(self) -> bool:
        return self.clock() >= self.retry_at

    def success(self) -> None:
        self.failures = 0
        self.retry_at = 0.0
        self.last_ok = self.clock()

    def failure(self, retry_after: float | None = None) -> None:
        self.failures += 1
        cap = min(self.max_backoff, self.base_backoff * 2 ** (self.failures - 1))
        delay = retry_after if retry_after is not None else random.uniform(cap / 2, cap)
        self.retry_at = self.clock() + delay

    @property
    def state(self) -> str:
        if self.failures == 0:
            return "online" if self.last_ok is not None else "unknown"
        return "backoff" if not self.allow() else "retry"
