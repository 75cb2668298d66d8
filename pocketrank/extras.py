"""Which install extra a command needs, and whether this environment has it.

`pip install pocketrank[edge]` gives a phone or a test rig the device SDK only; the server's commands
then cannot import torch, flask... Rather than a traceback ending in ModuleNotFoundError, the command
says in one line which extra to install (and exits 2, as for a usage error). The extras' contents are
read from the installed package's metadata (setup.cfg's [options.extras_require]), so there is no second
list to keep in step.
"""

from __future__ import annotations

import re
from importlib import metadata

# The extra each top-level command needs; a command not listed needs the whole server (training included).
COMMAND_EXTRA = {"serve": "serve", "updater": "serve", "device": "edge", "data": None}
DEFAULT_EXTRA = "server"
PROJECT = ("server", "shared", "exporter", "edge_runtime", "demo_app", "pocketrank")

_EXTRA_MARKER = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def command_extra(command: str | None) -> str | None:
    """The extra `pocketrank <command>` needs (None: the base install is enough)."""
    if command is None:
        return None
    return COMMAND_EXTRA.get(command, DEFAULT_EXTRA)


def missing(extra: str) -> list[str]:
    """The distributions `extra` requires that are not installed ([] if it is complete, or if pocketrank
    itself is not installed, e.g. a source tree on PYTHONPATH: nothing to compare with)."""
    try:
        requires = metadata.requires("pocketrank") or []
    except metadata.PackageNotFoundError:
        return []
    out = []
    for req in requires:
        marker = _EXTRA_MARKER.search(req)
        name = _NAME.match(req)
        if marker is None or marker.group(1) != extra or name is None:
            continue
        try:
            metadata.distribution(name.group(0))
        except metadata.PackageNotFoundError:
            out.append(name.group(0))
    return out


def install_hint(command: str, extra: str, absent: list[str]) -> str:
    """The one line a command prints when its extra is missing."""
    what = ", ".join(absent[:3]) + (f" and {len(absent) - 3} more" if len(absent) > 3 else "")
    return (f"`pocketrank {command}` needs the '{extra}' extra ({what} not installed): "
            f"pip install 'pocketrank[{extra}]'")


def is_third_party(exc: ModuleNotFoundError) -> bool:
    """A missing dependency, not a missing module of pocketrank itself (that is a bug: let it show)."""
    return exc.name is not None and exc.name.split(".")[0] not in PROJECT
