"""The server's home directory layout: store, models, bundles, keys."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from shared.errors import ModelError

from .store import Store


@dataclass
class Home:
    root: Path

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.root.mkdir(parents=True, exist_ok=True)

    @property
    def store_path(self) -> Path:
        return self.root / "store.sqlite"

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    def store(self) -> Store:
        return Store(self.store_path)

    def model_dir(self, version: str) -> Path:
        return self.root / "models" / version

    def bundle_dir(self, version: int) -> Path:
        return self.root / "bundles" / str(version)

    def current_model(self, store: Store | None = None) -> str:
        version = (store or self.store()).get_meta("current_model")
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
