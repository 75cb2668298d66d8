"""The device's steady clock: how much time has passed, whatever the wall clock says.

A phone's wall clock jumps: a dead battery resets it to 1970 or to its build date, the
network corrects it by years, the user sets it by hand. Measured on it, seconds-old
events looked years old after a forward correction and were dropped "by age". The
outbox therefore ages its events on this clock instead:

- within one boot it follows CLOCK_BOOTTIME (it counts suspend, unlike CLOCK_MONOTONIC),
  which no one sets, and which every process of the boot shares, so an app killed and
  restarted keeps measuring exactly;
- across a reboot (a new kernel boot id, or, where the OS exposes none, a new process)
  only the wall clock witnessed the gap, so it counts the wall clock's advance, never a
  step back, and at most UNWITNESSED_CAP: a clock corrected by years during a reboot
  ages nothing by years. What it under-counts only keeps events longer (the count and
  bytes bounds still hold).

Its reading is persisted in the database's `meta` table (`steady_anchor`) so the next
process continues from it. Its origin is the wall clock of the database's first open,
so on a device whose clock was always right it reads the same as the wall clock.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
UNWITNESSED_CAP = 86_400.0  # s: the most a gap only the wall clock saw may count
_PROCESS_BOOT = "process-" + uuid.uuid4().hex  # stands for the boot where the OS names none


def boot_id() -> str:
    try:
        return BOOT_ID.read_text().strip() or _PROCESS_BOOT
    except OSError:
        return _PROCESS_BOOT


def boottime() -> float:
    """Seconds since boot, suspend included, where the OS has such a clock; else the monotonic clock."""
    clock = getattr(time, "CLOCK_BOOTTIME", None)
    return time.clock_gettime(clock) if clock is not None else time.monotonic()


class SteadyClock:
    def __init__(self, wall: Callable[[], float] = time.time, mono: Callable[[], float] = boottime,
                 boot: str | None = None):
        self.wall, self.mono = wall, mono
        self.boot = boot or boot_id()
        self._base, self._mono0 = wall(), mono()

    def resume(self, anchor: str | None) -> None:
        """Continue from a persisted `anchor()` (None: a new database, whose steady time starts at the wall clock)."""
        mono, wall = self.mono(), self.wall()
        base = wall
        try:
            a = json.loads(anchor) if anchor else None
            if a is not None:
                if a["boot"] == self.boot and mono >= float(a["mono"]):
                    base = float(a["steady"]) + (mono - float(a["mono"]))
                else:
                    base = float(a["steady"]) + min(max(0.0, wall - float(a["wall"])), UNWITNESSED_CAP)
        except (ValueError, TypeError, KeyError):
            pass  # a damaged anchor: start again from the wall clock (ages may be off; nothing is lost)
        self._base, self._mono0 = base, mono

    def now(self) -> float:
        return self._base + max(0.0, self.mono() - self._mono0)

    def anchor(self) -> str:
        mono = self.mono()
        return json.dumps({"boot": self.boot, "mono": mono, "wall": self.wall(),
                           "steady": self._base + max(0.0, mono - self._mono0)})


CLOCK_TOLERANCE = 600.0  # s of disagreement with the server before the device clock is called wrong


def describe_offset(offset: float | None) -> str | None:
    """What is wrong with the device clock, given the server's clock minus the device's; None if nothing known is."""
    if offset is None or abs(offset) <= CLOCK_TOLERANCE:
        return None
    amount = abs(offset)
    size = (f"{amount / 86400:.1f} days" if amount >= 86400 else f"{amount / 3600:.1f} hours" if amount >= 3600
            else f"{amount / 60:.0f} minutes")
    return (f"the device clock is {size} {'behind' if offset > 0 else 'ahead of'} the server's: set it right (events "
            "are re-dated by the server's clock meanwhile, and a bundle may look expired or not yet valid)")
