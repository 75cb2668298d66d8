"""A small trained and published home for `bench attack`: MovieLens-100k, 2 epochs, exported and published.

Built once into ~/.cache/pocketrank/bench/attack-home-w<wire version> (a few minutes on two shared
cores: what tests/conftest.py's trained_home does, which a bench may not import), then copied for each
run, which may publish into its copy. A home published under another wire version is not reused: its
bundles would not be served.

    from bench._trained_home import trained_home
    root = trained_home(Path(tmp) / "home")
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from lab.homes import copy_home
from pocketrank.shared.wire import WIRE_VERSION

EPOCHS = 2


def _cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")))
    return base / "pocketrank" / "bench" / f"attack-home-w{WIRE_VERSION}-e{EPOCHS}"


def trained_home(dst: Path) -> Path:
    """A private copy of the cached home at `dst` (built first if there is none)."""
    cache = _cache_dir()
    if not (cache / ".complete").exists():
        _build(cache)
    copy_home(cache, dst, ignore=shutil.ignore_patterns(".complete"))
    return dst


def _build(cache: Path) -> None:
    from lab.homes import movielens_home

    tmp = cache.with_name(cache.name + f".building-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    movielens_home(tmp, EPOCHS, kind="fold")
    (tmp / ".complete").write_text("built\n")
    shutil.rmtree(cache, ignore_errors=True)
    os.replace(tmp, cache)
