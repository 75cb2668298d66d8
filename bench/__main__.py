"""Run every benchmark module in bench/ (or the ones named on the command line).

    python -m bench                       # all of them (`make bench`)
    python -m bench sync drift            # just these
    python -m bench sync -- --scale       # arguments after `--` go to each named benchmark
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from pathlib import Path


def available() -> list[str]:
    here = Path(__file__).parent
    return sorted(m.name for m in pkgutil.iter_modules([str(here)]) if not m.name.startswith("_"))


def main(argv: list[str]) -> int:
    extra: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, extra = argv[:at], argv[at + 1:]
    names = argv or available()
    unknown = sorted(set(names) - set(available()))
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(available())}")
        return 2
    failed = 0
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        print(f"\n##### bench {name}")
        start = time.perf_counter()
        rc = module.main(list(extra)) or 0
        failed += rc != 0
        print(f"##### bench {name}: {'ok' if rc == 0 else f'exit {rc}'} in {time.perf_counter() - start:.0f} s")
    return 1 if failed else 0


sys.exit(main(sys.argv[1:]))
