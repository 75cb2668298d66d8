"""A sequence model's user vector on the server: its encoder graph over the user's recent events.

The user's embedding is recomputed from the store's recent-event rows when it
is asked for, so it is fresh the moment the updater has appended an event (no
separate state to keep in step) and costs one small onnxruntime call. The feed
is pocketrank.shared.sequence.encoder_feed, the function the device builds its own with,
over the item vectors the server ranks with (so a product added after training
enters a history through its content vector, as on the device).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pocketrank.shared.errors import ModelError
from pocketrank.shared.sequence import encoder_feed

ENCODER_FP32 = "encoder.fp32.onnx"


class SequenceEncoder:
    """One onnxruntime session of a version's fp32 encoder graph."""

    def __init__(self, path: Path, max_len: int, dim: int):
        from .ranker import onnx_session

        self.session = onnx_session(path)
        self.max_len, self.dim = max_len, dim

    def user_vector(self, events: list[dict], vectors: Mapping[int, np.ndarray]) -> np.ndarray | None:
        """`events`: a store record's recent_events() (oldest first); None when none has a known product."""
        rows = [(e["type"], e["item_id"], e["timestamp"]) for e in events]
        feed = encoder_feed(rows, [vectors.get(e["item_id"]) if e["item_id"] else None for e in events],
                            self.max_len, self.dim)
        if feed is None:
            return None
        return self.session.run(None, feed)[0][0]


_KINDS: dict[str, str] = {}


def model_kind(model_dir: Path) -> str:
    """"sequence" or "fold", from the model's config.json (a model from before the sequence model, or one
    not found: fold). Cached per folder: a trained model's folder does not change."""
    key = str(model_dir)
    kind = _KINDS.get(key)
    if kind is None:
        try:
            kind = str(json.loads((Path(model_dir) / "config.json").read_text())["config"].get("kind", "fold"))
        except (OSError, ValueError, KeyError, AttributeError):
            return "fold"  # not cached: the folder may be being written
        _KINDS[key] = kind
    return kind


def load_encoder(model_dir: Path) -> SequenceEncoder | None:
    """The version's encoder if it is a sequence model (its config.json says so), else None (a fold model)."""
    model_dir = Path(model_dir)
    try:
        config = json.loads((model_dir / "config.json").read_text())["config"]
    except (OSError, ValueError, KeyError):
        return None
    if config.get("kind") != "sequence":
        return None
    path = model_dir / ENCODER_FP32
    if not path.exists():
        raise ModelError(f"sequence model {model_dir.name} has no {ENCODER_FP32}; run `pocketrank export`")
    return SequenceEncoder(path, int(config["max_len"]), int(config["dim"]))


def record_vector_fn(home, store) -> Callable[[Any], np.ndarray | None] | None:
    """For the store's current model if it is a sequence model: record -> its user vector (the encoder
    over the record's recent events with the store's item vectors). None for a fold model (its vector is
    the record's own state)."""
    from .catalogue import load_catalogue

    model = store.get_meta("current_model")
    encoder = load_encoder(home.model_dir(model)) if model else None
    if encoder is None:
        return None
    vectors = load_catalogue(store).vector_map()
    return lambda record: encoder.user_vector(record.recent_events(), vectors)
