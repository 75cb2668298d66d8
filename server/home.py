"""The server's home directory layout: store, models, bundles, keys.

The store is the one the configuration selects (POCKETRANK_STORE and friends,
server/config.py), so `pocketrank train`, `export` and `publish` write where
the server reads: the home's SQLite file by default, Redis when configured.
Models, bundles and keys stay files in the home either way.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pocketrank.shared.errors import ModelError

from .stores.base import Store

if TYPE_CHECKING:
    from .config import Config


@dataclass
class Home:
    root: Path
    config: Config | None = None  # None: read POCKETRANK_* from the environment when a store is opened

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.root.mkdir(parents=True, exist_ok=True)

    @property
    def store_path(self) -> Path:
        """Where the SQLite store lives (when the configuration selects SQLite)."""
        return self.root / "store.sqlite"

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    def store(self) -> Store:
        """Open the configured store (SQLite in this home, or Redis)."""
        from .config import Config
        from .stores import open_store

        config = self.config or Config.from_env(home=self.root)
        if Path(config.home).resolve() != self.root.resolve():
            config = dataclasses.replace(config, home=self.root)  # the home names the SQLite file
        return open_store(config)

    def model_dir(self, version: str) -> Path:
        return self.root / "models" / version

    def bundle_dir(self, version: int) -> Path:
        return self.root / "bundles" / str(version)

    def current_model(self, store: Store | None = None) -> str:
        if store is None:
            # Close what we open rather than leave it to the garbage collector (a Redis pool, a SQLite file).
            own = self.store()
            try:
                return self.current_model(own)
            finally:
                own.close()
        version = store.get_meta("current_model")
        if not version:
            raise ModelError(f"no trained model in {self.root}; run `pocketrank train` first")
        return version

    def write_json(self, path: Path, obj: dict) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")

    def read_json(self, path: Path) -> dict:
        try:
            return json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise ModelError(f"{path} is missing; run the step that writes it first") from exc
