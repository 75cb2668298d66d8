"""pocketrank: marketplace recommendations that keep working on a phone with a poor connection.

`pocketrank` is the command (pocketrank/cli.py) and `pocketrank.Home` the Python API behind it
(pocketrank/home.py, docs/python-api.md). The version is defined here, once: setup.cfg reads it
(`attr:`), the package metadata and `pocketrank --version` follow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Home", "__version__"]

if TYPE_CHECKING:
    from .home import Home


def __getattr__(name: str) -> Any:
    # Home imports the server on first use only: `pocketrank --version` and `pocketrank device` (an
    # edge-only install) never load it.
    if name == "Home":
        from .home import Home

        return Home
    raise AttributeError(f"module 'pocketrank' has no attribute {name!r}")
