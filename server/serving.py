"""What the API serves from: the current model, catalogue and bundle, reloaded on publish."""

from __future__ import annotations

import threading

import numpy as np

from shared.features import user_vector

from .config import Config
from .home import Home
from .publish import load_catalogue
from .ranking import Ranker, popular
from .store import Store


class Serving:
    """Holds the loaded ranker; reloads when `pocketrank publish` bumps the bundle version."""

    def __init__(self, config: Config):
        self.config = config
        self.home = Home(config.home)
        self.store = Store(self.home.store_path)
        self._lock = threading.Lock()
        self._loaded_version: str | None = None
        self.ranker: Ranker | None = None
        self.vectors: dict[int, np.ndarray] = {}
        self.titles: dict[int, str] = {}
        self.popular: list[int] = []
        self.model_version = ""
        self.dim = 64

    def refresh(self) -> None:
        key = f"{self.store.get_meta('current_model')}/{self.store.get_meta('bundle_version')}"
        if key == self._loaded_version:
            return
        with self._lock:
            if key == self._loaded_version:
                return
            model_version = self.home.current_model(self.store)
            catalogue = load_catalogue(self.store)
            ranker = Ranker(catalogue, self.home.model_dir(model_version) / "ranker.fp32.onnx",
                            self.config.n_candidates, self.config.max_per_category)
            self.vectors = {int(i): v for i, v in zip(catalogue.ids, catalogue.vectors)}
            self.titles = {it.item_id: it.title for it in self.store.items()}
            self.popular = popular(self.store.item_counts(), catalogue.in_stock)
            self.dim = catalogue.vectors.shape[1]
            self.ranker, self.model_version = ranker, model_version
            self._loaded_version = key

    @property
    def bundle_version(self) -> int:
        return int(self.store.get_meta("bundle_version", "0"))

    def recommend(self, user_id: str, k: int) -> tuple[list[tuple[int, float]], str]:
        """Personal ranking when the user has a state, else popular items."""
        self.refresh()
        state = self.store.user_state(user_id, self.dim)
        consumed = self.store.consumed_items(user_id)
        if state.w > 0 and self.ranker is not None:
            return self.ranker.rank(user_vector(state), k, consumed), "personal"
        items = [i for i in self.popular if i not in consumed][:k]
        return [(i, 0.0) for i in items], "popular"
