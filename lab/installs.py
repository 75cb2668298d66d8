"""Clean installs of the built wheel, one extra each: what tests/test_packaging.py checks and bench/install
measures (a fresh `python -m venv` with nothing from this machine's environment; packages from PyPI).

    from lab.installs import build_wheel, fresh_install
    wheel = build_wheel(tmp / "dist")
    env = fresh_install(wheel, "edge", tmp / "edge")       # env.python, env.bin("pocketrank"), env.seconds
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def build_wheel(out: Path) -> Path:
    """The wheel of this checkout, built as `make dist` builds it (but without build isolation: the
    running environment's setuptools, so it works offline)."""
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "-o", str(out), str(REPO)],
                   check=True, capture_output=True, text=True)
    wheels = sorted(out.glob("pocketrank-*.whl"), key=lambda p: p.stat().st_mtime)
    return wheels[-1]


@dataclass
class Install:
    root: Path
    seconds: float  # venv creation + pip install

    def bin(self, name: str) -> Path:
        return self.root / "bin" / name

    @property
    def python(self) -> Path:
        return self.bin("python")

    def site_packages(self) -> Path:
        return Path(subprocess.run([str(self.python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                   check=True, capture_output=True, text=True).stdout.strip())

    def size_bytes(self) -> int:
        """Bytes on disk under site-packages (du's apparent-size sum of regular files)."""
        return sum(p.stat().st_size for p in self.site_packages().rglob("*") if p.is_file() and not p.is_symlink())

    def distributions(self) -> set[str]:
        out = subprocess.run([str(self.python), "-c", "import importlib.metadata as m; "
                              "print('\\n'.join(sorted({d.metadata['Name'].lower() for d in m.distributions()})))"],
                             check=True, capture_output=True, text=True).stdout
        return set(out.split())

    def run(self, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
        """A command of this install, with an environment that cannot see this checkout."""
        base = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "POCKETRANK_", "VIRTUAL_ENV"))}
        return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, cwd=cwd or self.root,
                              env={**base, **(env or {})})


def fresh_install(wheel: Path, extra: str | None, root: Path, pip_cache: Path | None = None) -> Install:
    """`python -m venv ROOT && ROOT/bin/pip install 'WHEEL[extra]'` (reused if ROOT already has it)."""
    stamp, what = root / ".installed", f"{hashlib.sha256(wheel.read_bytes()).hexdigest()}[{extra}]"
    if stamp.exists() and stamp.read_text() == what:
        return Install(root, float("nan"))
    start = time.perf_counter()
    base = sysconfig.get_config_var("BINDIR")  # the interpreter's own, not a venv's: nothing inherited
    subprocess.run([str(Path(base) / f"python{sys.version_info.major}.{sys.version_info.minor}"), "-m", "venv", "--clear", str(root)], check=True)
    env = {**os.environ, **({"PIP_CACHE_DIR": str(pip_cache)} if pip_cache else {})}
    target = f"{wheel}[{extra}]" if extra else str(wheel)
    subprocess.run([str(root / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", target],
                   check=True, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    stamp.write_text(what)
    return Install(root, seconds)
