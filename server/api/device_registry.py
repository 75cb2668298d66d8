"""Device registry: one token per device, stored hashed, bound to the users it may see.

A token is shown once, at registration; the server keeps only its sha256, so
a leaked database does not leak working tokens. Re-registering a device
rotates its token; revoking it makes every later request with it a 401.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from shared.errors import AuthError, ValidationError
from shared.schemas import check_id

SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    device_id TEXT PRIMARY KEY, token_sha256 TEXT NOT NULL UNIQUE, users TEXT NOT NULL,
    created_at REAL NOT NULL, revoked_at REAL
);
"""
MAX_USERS_PER_DEVICE = 50


@dataclass(frozen=True)
class Device:
    device_id: str
    users: frozenset[str]

    def check_users(self, users: list[str]) -> None:
        others = sorted(set(users) - self.users)
        if others:
            raise AuthError(f"device {self.device_id} is not registered for user(s) {', '.join(others[:5])}", 403)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class DeviceRegistry:
    def __init__(self, path: Path | str):
        self.path = str(path)
        self._local = threading.local()
        self.db.executescript(SCHEMA)

    @property
    def db(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            self._local.conn = conn
        return conn

    def register(self, device_id: str, users: list[str]) -> tuple[Device, str]:
        """Create or rotate the device's token; returns the device and its token (shown only now)."""
        device_id = check_id("device_id", device_id)
        if not isinstance(users, list) or not users:
            raise ValidationError("users", "must be a non-empty list of user ids")
        if len(users) > MAX_USERS_PER_DEVICE:
            raise ValidationError("users", f"at most {MAX_USERS_PER_DEVICE} users per device")
        users = sorted({check_id("users", u) for u in users})
        token = secrets.token_urlsafe(32)
        self.db.execute(
            "INSERT INTO devices VALUES (?, ?, ?, ?, NULL) ON CONFLICT(device_id) DO UPDATE SET "
            "token_sha256=excluded.token_sha256, users=excluded.users, revoked_at=NULL",
            (device_id, _digest(token), json.dumps(users), time.time()),
        )
        return Device(device_id, frozenset(users)), token

    def revoke(self, device_id: str) -> bool:
        cur = self.db.execute("UPDATE devices SET revoked_at = ? WHERE device_id = ? AND revoked_at IS NULL",
                              (time.time(), device_id))
        return cur.rowcount == 1

    def authenticate(self, token: str | None) -> Device:
        if not token:
            raise AuthError("this endpoint needs a device token: send 'Authorization: Bearer <token>'")
        row = self.db.execute("SELECT device_id, users, revoked_at, token_sha256 FROM devices WHERE token_sha256 = ?",
                              (_digest(token),)).fetchone()
        # compare_digest: the lookup is by hash already, this keeps the check constant-time anyway.
        if row is None or not hmac.compare_digest(row[3], _digest(token)):
            raise AuthError("unknown device token; register the device again")
        if row[2] is not None:
            raise AuthError(f"the token of device {row[0]} was revoked; register the device again")
        return Device(row[0], frozenset(json.loads(row[1])))
