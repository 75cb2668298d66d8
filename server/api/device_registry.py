"""Device registry: one token per device, stored hashed, bound to the users it may see.

A token is shown once, at registration; the server keeps only its sha256, so
a leaked database does not leak working tokens. A device id is registered once
and never again: registering an id that exists (active or revoked) is refused,
so nobody, not even a caller holding the operator key by mistake, takes over a
device's id, its users or the events it already sent. Revoking a device makes
every later request with its token a 401, for good; a replacement is
registered under a new id.
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

from pocketrank.shared.errors import AuthError, PocketrankError, ValidationError
from pocketrank.shared.schemas import check_id

from ..stores.sqlite import enable_wal

SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    device_id TEXT PRIMARY KEY, token_sha256 TEXT NOT NULL UNIQUE, users TEXT NOT NULL,
    created_at REAL NOT NULL, revoked_at REAL
);
"""
MAX_USERS_PER_DEVICE = 50


class DeviceTaken(PocketrankError):
    """The device id is registered already (or was, and was revoked): a 409, never a takeover."""


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
            enable_wal(conn)  # two servers starting on one home open this file at once
            self._local.conn = conn
        return conn

    def register(self, device_id: str, users: list[str]) -> tuple[Device, str]:
        """Register a new device; returns it and its token (shown only now). DeviceTaken if the id exists."""
        device_id = check_id("device_id", device_id)
        if not isinstance(users, list) or not users:
            raise ValidationError("users", "must be a non-empty list of user ids")
        if len(users) > MAX_USERS_PER_DEVICE:
            raise ValidationError("users", f"at most {MAX_USERS_PER_DEVICE} users per device")
        users = sorted({check_id("users", u) for u in users})
        token = secrets.token_urlsafe(32)
        # A plain INSERT: the primary key makes "is it taken?" and "take it" one atomic step, so two
        # racing registrations of one id cannot both win.
        cur = self.db.execute("INSERT INTO devices VALUES (?, ?, ?, ?, NULL) ON CONFLICT(device_id) DO NOTHING",
                              (device_id, _digest(token), json.dumps(users), time.time()))
        if cur.rowcount != 1:
            row = self.db.execute("SELECT revoked_at FROM devices WHERE device_id = ?", (device_id,)).fetchone()
            if row is not None and row[0] is not None:
                raise DeviceTaken(f"device {device_id!r} was revoked; a revoked id is never reused: register the "
                                  "device under a new id")
            raise DeviceTaken(f"device {device_id!r} is registered already; a registered id is never taken over "
                              "(revoke it and register the device under a new id)")
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
