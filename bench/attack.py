"""`python -m bench attack` (`make attack`): every class of issue 17 tried against the real parts.

Each area lives in its own module, `bench/_attack_<area>.py`, exposing

    def run(report: Report) -> None

which starts what it needs (a real server process, a real EdgeClient, a TCP
proxy in between, a killed process), tries its cases and calls
`report(cls, case, outcome, detail="")` once per case, where outcome is one of

    "refused"   the attack was turned away (a 4xx, a refused answer, an error the caller can catch)
    "survived"  the attack went through harmlessly (the system did the right thing anyway)
    "wrong"     the system did something it must not (a wrong answer, data lost, a takeover)
    "5xx"       the server answered a status of 500 or more

This prints, per class, cases tried / refused or survived / wrong / 5xx, and
exits 1 if anything was wrong or answered 5xx (the goal is 0 and 0).
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
import traceback
from collections import defaultdict
from pathlib import Path

OUTCOMES = ("refused", "survived", "wrong", "5xx")


class Report:
    def __init__(self) -> None:
        self.rows: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(OUTCOMES, 0))
        self.bad: list[str] = []

    def __call__(self, cls: str, case: str, outcome: str, detail: str = "") -> None:
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome {outcome!r} is not one of {OUTCOMES}")
        self.rows[cls][outcome] += 1
        if outcome in ("wrong", "5xx"):
            self.bad.append(f"{cls}: {case}: {outcome} {detail}".rstrip())

    def table(self) -> str:
        lines = [f"{'class':44} {'tried':>6} {'refused/survived':>17} {'wrong':>6} {'5xx':>5}"]
        for cls, r in sorted(self.rows.items()):
            tried = sum(r.values())
            lines.append(f"{cls:44} {tried:>6} {r['refused'] + r['survived']:>17} {r['wrong']:>6} {r['5xx']:>5}")
        return "\n".join(lines)


def areas() -> list[str]:
    here = Path(__file__).parent
    return sorted(m.name[len("_attack_"):] for m in pkgutil.iter_modules([str(here)])
                  if m.name.startswith("_attack_"))


def main(argv: list[str]) -> int:
    names = [a for a in argv if not a.startswith("-")] or areas()
    report, failed = Report(), []
    for name in names:
        start = time.perf_counter()
        try:
            importlib.import_module(f"bench._attack_{name}").run(report)
        except Exception:  # one area's harness failing must not hide the others' figures
            failed.append(name)
            traceback.print_exc()
        print(f"  area {name}: {time.perf_counter() - start:.0f} s")
    print(report.table())
    for line in report.bad:
        print("  BAD", line)
    if failed:
        print(f"  harness failed in: {', '.join(failed)}")
    return 1 if report.bad or failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
