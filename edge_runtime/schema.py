"""The device database's schema, versioned with PRAGMA user_version and migrated in order.

Each migration runs in its own transaction together with the version bump, so
a crash mid-migration leaves the database on the previous version and the
next open runs it again. A database written by a newer SDK is refused rather
than guessed at.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from .artifacts import ArtifactFiles
from .errors import StorageError
from .packed import repack

# v1: the first release's tables, exactly as it created them (through sqlite-utils),
# so a database it wrote is recognised as v1 although its user_version is 0.
V1 = """
CREATE TABLE IF NOT EXISTS [meta] ([key] TEXT PRIMARY KEY, [value] TEXT);
CREATE TABLE IF NOT EXISTS [items] ([item_id] INTEGER PRIMARY KEY, [vector] BLOB, [title] TEXT,
    [category] TEXT, [price] FLOAT, [in_stock] INTEGER);
CREATE TABLE IF NOT EXISTS [candidates] ([user_id] TEXT PRIMARY KEY, [blob] BLOB, [version] INTEGER,
    [received_at] FLOAT);
CREATE TABLE IF NOT EXISTS [user_state] ([user_id] TEXT PRIMARY KEY, [s] BLOB, [w] FLOAT, [n_events] INTEGER,
    [updated_at] FLOAT);
CREATE TABLE IF NOT EXISTS [consumed] ([user_id] TEXT, [item_id] INTEGER, [type] TEXT,
    PRIMARY KEY ([user_id], [item_id]));
CREATE TABLE IF NOT EXISTS [artifacts] ([name] TEXT PRIMARY KEY, [sha256] TEXT, [blob] BLOB);
CREATE TABLE IF NOT EXISTS [partials] ([sha256] TEXT PRIMARY KEY, [blob] BLOB);
CREATE TABLE IF NOT EXISTS [outbox] ([event_id] TEXT PRIMARY KEY, [user_id] TEXT, [type] TEXT, [body] TEXT,
    [size] INTEGER, [created_at] FLOAT, [attempts] INTEGER);
CREATE TABLE IF NOT EXISTS [rejected] ([event_id] TEXT PRIMARY KEY, [body] TEXT, [reason] TEXT, [at] FLOAT);
CREATE INDEX IF NOT EXISTS [idx_outbox_created_at] ON [outbox] ([created_at]);
"""

# v2: model and data artifacts move to content-addressed files; candidate rows
# are packed for the rerank; the outbox keeps running totals (count and bytes)
# in the same transaction as every insert and delete, and a record of drops.
V2 = """
ALTER TABLE candidates ADD COLUMN ids BLOB;
ALTER TABLE candidates ADD COLUMN scores BLOB;
ALTER TABLE candidates ADD COLUMN vectors BLOB;
ALTER TABLE candidates ADD COLUMN stock BLOB;
ALTER TABLE candidates ADD COLUMN cats BLOB;
CREATE TABLE artifact_files (name TEXT PRIMARY KEY, sha256 TEXT NOT NULL, length INTEGER NOT NULL);
DROP TABLE partials;
CREATE INDEX outbox_type_age ON outbox (type, created_at);
CREATE TABLE outbox_totals (id INTEGER PRIMARY KEY CHECK (id = 1), events INTEGER NOT NULL, bytes INTEGER NOT NULL);
INSERT INTO outbox_totals SELECT 1, COUNT(*), COALESCE(SUM(size), 0) FROM outbox;
CREATE TRIGGER outbox_totals_add AFTER INSERT ON outbox BEGIN
    UPDATE outbox_totals SET events = events + 1, bytes = bytes + NEW.size WHERE id = 1; END;
CREATE TRIGGER outbox_totals_remove AFTER DELETE ON outbox BEGIN
    UPDATE outbox_totals SET events = events - 1, bytes = bytes - OLD.size WHERE id = 1; END;
CREATE TRIGGER outbox_totals_resize AFTER UPDATE OF size ON outbox BEGIN
    UPDATE outbox_totals SET bytes = bytes - OLD.size + NEW.size WHERE id = 1; END;
CREATE TABLE outbox_dropped (type TEXT NOT NULL, reason TEXT NOT NULL, n INTEGER NOT NULL, last_at REAL NOT NULL,
    PRIMARY KEY (type, reason));
CREATE TABLE unknown_users (user_id TEXT PRIMARY KEY, version INTEGER NOT NULL);
"""


# v3: items arrive as signed per-item entries (wire 4); each held item keeps the sha256 of its entry and
# the model version it was signed for. Items held from wire 3's whole-catalogue artifacts have neither:
# the next sync drops them and asks for the ones the held lists reference.
V3 = """
ALTER TABLE items ADD COLUMN sha256 BLOB;
ALTER TABLE items ADD COLUMN model TEXT;
"""


# v4: products carry the marketplace's own string id (wire 5). Each held item keeps its entry's external id
# (unique: the app names products by it; the index stays the key of packed rows, records and `popular`), and
# consumed items are kept by that id, so a product consumed before the device held its entry is still left
# out once the entry arrives. A database from before has no external ids: a catalogue from before string ids
# named each product by its index's decimal digits, so those are filled in and the device keeps answering
# offline with them; the held entries are marked as held under no model (as wire 3's were in v3), so the next
# sync drops them and asks for them again as signed PRI2 entries, which carry the real ids.
V4 = """
ALTER TABLE items ADD COLUMN external_id TEXT;
UPDATE items SET external_id = CAST(item_id AS TEXT), model = NULL;
CREATE UNIQUE INDEX items_external_id ON items (external_id);
CREATE TABLE consumed_v4 (user_id TEXT NOT NULL, item_id TEXT NOT NULL, type TEXT, PRIMARY KEY (user_id, item_id));
INSERT OR REPLACE INTO consumed_v4 (user_id, item_id, type) SELECT user_id, CAST(item_id AS TEXT), type FROM consumed
    WHERE user_id IS NOT NULL AND item_id IS NOT NULL;
DROP TABLE consumed;
ALTER TABLE consumed_v4 RENAME TO consumed;
"""


def _run_script(conn: sqlite3.Connection, script: str) -> None:
    """Statement by statement: executescript() would commit the migration's open transaction."""
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            conn.execute(pending)
            pending = ""


def _v1(conn: sqlite3.Connection, files: ArtifactFiles) -> None:
    _run_script(conn, V1)


def _v2(conn: sqlite3.Connection, files: ArtifactFiles) -> None:
    moved = conn.execute("SELECT name, sha256, blob FROM artifacts WHERE blob IS NOT NULL").fetchall()
    _run_script(conn, V2)
    # Files first, rows after: if this transaction rolls back, the files are
    # unreferenced and the next open's garbage collection removes them.
    for name, sha, blob in moved:
        files.put(sha, blob)
        conn.execute("INSERT INTO artifact_files VALUES (?, ?, ?)", (name, sha, len(blob)))
    conn.execute("DROP TABLE artifacts")
    conn.execute("ALTER TABLE artifact_files RENAME TO artifacts")
    repack(conn)


def _v3(conn: sqlite3.Connection, files: ArtifactFiles) -> None:
    _run_script(conn, V3)


def _v4(conn: sqlite3.Connection, files: ArtifactFiles) -> None:
    _run_script(conn, V4)


MIGRATIONS: list[Callable[[sqlite3.Connection, ArtifactFiles], None]] = [_v1, _v2, _v3, _v4]
LATEST = len(MIGRATIONS)


def version(conn: sqlite3.Connection) -> int:
    return conn.execute("PRAGMA user_version").fetchone()[0]


def migrate(conn: sqlite3.Connection, files: ArtifactFiles, target: int = LATEST) -> int:
    """Bring the database to `target` (default: the newest schema); returns the version it is on."""
    current = version(conn)
    if current > LATEST:
        raise StorageError(f"the device database has schema v{current}, written by a newer SDK; this one reads up "
                           f"to v{LATEST}: update the app, or delete the database to start over")
    for number in range(current + 1, target + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            MIGRATIONS[number - 1](conn, files)
            conn.execute(f"PRAGMA user_version = {number}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    return version(conn)
