"""What each install extra costs: a fresh venv per extra, side by side (issue 18).

    python -m bench install                     # edge and serve, from a cold pip cache, then a warm one
    python -m bench install -- --extras edge serve server

The wheel of this checkout is built once (lab/installs.build_wheel); each extra is installed into a new
`python -m venv` with `pip install 'WHEEL[extra]'` from PyPI, first with an empty pip cache (download +
install), then again with the cache the first run filled (install only). Reported: seconds for each,
site-packages megabytes, distributions, and whether torch, scipy, matplotlib or pyarrow came along.
Print `uptime` beside the figures: the times depend on the machine's load and network.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from lab.installs import build_wheel, fresh_install

HEAVY = ("torch", "scipy", "matplotlib", "pyarrow", "flask")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench install")
    parser.add_argument("--extras", nargs="+", default=["edge", "serve"])
    args = parser.parse_args(argv)
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} (1/5/15 min)")
    with tempfile.TemporaryDirectory(prefix="bench-install-") as tmp:
        root = Path(tmp)
        wheel = build_wheel(root / "dist")
        print(f"{'extra':8s} {'cold s':>8s} {'warm s':>8s} {'MB':>8s} {'dists':>6s}  heavy")
        for extra in args.extras:
            cache = root / f"pip-{extra}"
            cold = fresh_install(wheel, extra, root / f"{extra}-cold", pip_cache=cache)
            warm = fresh_install(wheel, extra, root / f"{extra}-warm", pip_cache=cache)
            dists = warm.distributions()
            heavy = ", ".join(h for h in HEAVY if h in dists) or "none"
            print(f"{extra:8s} {cold.seconds:8.1f} {warm.seconds:8.1f} {warm.size_bytes() / 1e6:8.1f} "
                  f"{len(dists):6d}  {heavy}", flush=True)
    print(f"load after: {os.getloadavg()[0]:.2f}")
    return 0
