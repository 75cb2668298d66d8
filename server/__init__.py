"""pocketrank server: data, training, realtime updates, stores, ranking, publishing, REST API."""

import os
from pathlib import Path


def default_home() -> Path:
    """Where the server keeps its store, models, bundles and keys ($POCKETRANK_HOME)."""
    return Path(os.environ.get("POCKETRANK_HOME", "var")).resolve()
