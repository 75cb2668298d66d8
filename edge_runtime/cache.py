"""The device's SQLite cache (sqlite-utils): bundle parts, user state, outbox.

Everything a sync brings is written in one transaction, so a device is
always on one complete bundle version: a crash mid-apply rolls back.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import sqlite_utils

from shared.features import UserState

TABLES = {
    "meta": ({"key": str, "value": str}, "key"),
    "items": ({"item_id": int, "vector": bytes, "title": str, "category": str, "price": float,
               "in_stock": int}, "item_id"),
    "candidates": ({"user_id": str, "blob": bytes, "version": int, "received_at": float}, "user_id"),
    "user_state": ({"user_id": str, "s": bytes, "w": float, "n_events": int, "updated_at": float}, "user_id"),
    "consumed": ({"user_id": str, "item_id": int, "type": str}, ("user_id", "item_id")),
    "artifacts": ({"name": str, "sha256": str, "blob": bytes}, "name"),
    "partials": ({"sha256": str, "blob": bytes}, "sha256"),
    "outbox": ({"event_id": str, "user_id": str, "type": str, "body": str, "size": int,
                "created_at": float, "attempts": int}, "event_id"),
    "rejected": ({"event_id": str, "body": str, "reason": str, "at": float}, "event_id"),
}


class DeviceCache:
    def __init__(self, path: Path | str):
        self.db = sqlite_utils.Database(str(path))
        self.db.execute("PRAGMA journal_mode=WAL")
        # FULL: an event is on disk before track() returns, even on power loss.
        self.db.execute("PRAGMA synchronous=FULL")
        for name, (columns, pk) in TABLES.items():
            if name not in self.db.table_names():
                self.db[name].create(columns, pk=pk)
        if "outbox" in self.db.table_names():
            self.db["outbox"].create_index(["created_at"], if_not_exists=True)

    # --- meta ---

    def get(self, key: str, default: str | None = None) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return row[0] if row else default

    def set(self, key: str, value: str) -> None:
        self.db["meta"].upsert({"key": key, "value": value}, pk="key")

    @property
    def version(self) -> int:
        return int(self.get("bundle_version", "0"))

    def manifest(self) -> dict | None:
        raw = self.get("manifest")
        return json.loads(raw) if raw else None

    # --- reads used by the local rerank ---

    def candidates(self, user_id: str) -> tuple[bytes, int, float] | None:
        row = self.db.execute("SELECT blob, version, received_at FROM candidates WHERE user_id = ?",
                              [user_id]).fetchone()
        return (row[0], row[1], row[2]) if row else None

    def vectors(self, item_ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """(ids found, their vectors), in the order asked."""
        if not item_ids:
            return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
        rows = {}
        for chunk in range(0, len(item_ids), 500):
            part = item_ids[chunk : chunk + 500]
            marks = ",".join("?" * len(part))
            rows.update(self.db.execute(f"SELECT item_id, vector FROM items WHERE item_id IN ({marks})", part))
        found = [i for i in item_ids if i in rows]
        if not found:
            return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
        return np.array(found, dtype=np.int64), np.stack([np.frombuffer(rows[i], dtype="<f4") for i in found])

    def vector(self, item_id: int) -> np.ndarray | None:
        row = self.db.execute("SELECT vector FROM items WHERE item_id = ?", [item_id]).fetchone()
        return np.frombuffer(row[0], dtype="<f4").astype(np.float32) if row else None

    def item_meta(self, item_ids: list[int]) -> dict[int, dict]:
        if not item_ids:
            return {}
        marks = ",".join("?" * len(item_ids))
        rows = self.db.execute(
            f"SELECT item_id, title, category, price, in_stock FROM items WHERE item_id IN ({marks})", item_ids)
        return {r[0]: {"title": r[1], "category": r[2], "price": r[3], "in_stock": bool(r[4])} for r in rows}

    def titles(self) -> dict[int, str]:
        return dict(self.db.execute("SELECT item_id, title FROM items"))

    def popular(self) -> list[int]:
        return json.loads(self.get("popular", "[]"))

    def user_state(self, user_id: str, dim: int) -> UserState | None:
        row = self.db.execute("SELECT s, w, n_events FROM user_state WHERE user_id = ?", [user_id]).fetchone()
        if row is None:
            return None
        return UserState(np.frombuffer(row[0], dtype="<f4").astype(np.float32), row[1], row[2])

    def put_state(self, user_id: str, state: UserState) -> None:
        self.db["user_state"].upsert({"user_id": user_id, "s": np.asarray(state.s, dtype="<f4").tobytes(),
                                      "w": float(state.w), "n_events": state.n_events,
                                      "updated_at": time.time()}, pk="user_id")

    def consumed(self, user_id: str) -> set[int]:
        return {r[0] for r in self.db.execute("SELECT item_id FROM consumed WHERE user_id = ?", [user_id])}

    def artifact(self, name: str) -> tuple[str, bytes] | None:
        row = self.db.execute("SELECT sha256, blob FROM artifacts WHERE name = ?", [name]).fetchone()
        return (row[0], row[1]) if row else None

    def users(self) -> list[str]:
        rows = self.db.execute("SELECT user_id FROM user_state UNION SELECT user_id FROM candidates")
        return sorted(r[0] for r in rows)
