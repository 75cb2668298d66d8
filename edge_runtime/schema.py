"""The device database's schema, versioned with PRAGMA user_version and migrated in order.

Each migration runs in its own transaction together with the version bump, so
a crash mid-migration leaves the database on the previous version and the
next open runs it again. A database written by a newer SDK is refused rather
than guessed at.

Several processes may open one database at once (the app, its widget, the
CLI). Each step therefore reads the version again after taking the write lock
(BEGIN IMMEDIATE) and does nothing if another process got there first: a
version read before the lock is stale by the time the lock is held. Releases
before v5 read it only before, so two processes could run a step twice and set
the version back on a newer schema, after which every open failed; such a
database is recognised by its tables (`shape`), its version is set right, and
it opens again with its queued events.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from .artifacts import ArtifactFiles
from .errors import STORAGE_CODES, StorageError
from .packed import repack
from .rowsum import blob_sum, event_sum, packed_sum, state_sum

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


# v5: what the device stores carries a checksum (edge_runtime/rowsum.py): queued events, packed candidate
# rows and their records, user states; damage found on a read is recorded in `damaged` (a damaged queued
# event's bytes with it). The outbox ages its events on the steady clock (edge_runtime/steadyclock.py), not
# the wall clock, which jumps; events held before start at their wall-clock time, the steady clock's origin.
# `redated`: an event the server refused as dated in its future, re-dated once by the server's clock.
V5 = """
ALTER TABLE outbox ADD COLUMN steady REAL;
ALTER TABLE outbox ADD COLUMN checksum INTEGER;
ALTER TABLE outbox ADD COLUMN redated INTEGER NOT NULL DEFAULT 0;
UPDATE outbox SET steady = created_at;
DROP INDEX IF EXISTS idx_outbox_created_at;
DROP INDEX IF EXISTS outbox_type_age;
CREATE INDEX outbox_steady ON outbox (steady);
CREATE INDEX outbox_type_steady ON outbox (type, steady);
ALTER TABLE candidates ADD COLUMN checksum INTEGER;
ALTER TABLE candidates ADD COLUMN blob_checksum INTEGER;
ALTER TABLE user_state ADD COLUMN checksum INTEGER;
CREATE TABLE damaged (id INTEGER PRIMARY KEY, kind TEXT NOT NULL, key TEXT, detail TEXT NOT NULL, at REAL NOT NULL,
    body BLOB);
"""


# v6: a sequence model's device keeps each user's event history (edge_runtime/sequence.py): the server's
# events as of the last sync (by item index) and the events tracked here since (by product id), each row
# checksummed like the other stored rows.
V6 = """
CREATE TABLE user_history (pos INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL, type TEXT NOT NULL,
    item_index INTEGER, external_id TEXT, ts REAL NOT NULL, checksum INTEGER);
CREATE INDEX user_history_user ON user_history (user_id, pos);
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
    repack(conn, checksums=False)  # v2's columns: the checksums come with v5


def _v3(conn: sqlite3.Connection, files: ArtifactFiles) -> None:
    _run_script(conn, V3)


def _v4(conn: sqlite3.Connection, files: ArtifactFiles) -> None:
    _run_script(conn, V4)


def _v5(conn: sqlite3.Connection, files: ArtifactFiles) -> None:
    _run_script(conn, V5)
    conn.executemany("UPDATE outbox SET checksum = ? WHERE rowid = ?", [
        (event_sum(e, u, t, b), r) for r, e, u, t, b in conn.execute(
            "SELECT rowid, event_id, user_id, type, body FROM outbox").fetchall()])
    conn.executemany("UPDATE candidates SET checksum = ?, blob_checksum = ? WHERE rowid = ?", [
        (packed_sum(u, *packed), blob_sum(u, blob), r) for r, u, blob, *packed in conn.execute(
            "SELECT rowid, user_id, blob, ids, scores, vectors, stock, cats FROM candidates").fetchall()])
    rows = conn.execute("SELECT rowid, user_id, s, w, n_events FROM user_state").fetchall()
    conn.executemany("UPDATE user_state SET checksum = ? WHERE rowid = ?",
                     [(state_sum(u, s, w, n), r) for r, u, s, w, n in rows if None not in (s, w, n)])


def _v6(conn: sqlite3.Connection, files: ArtifactFiles) -> None:
    _run_script(conn, V6)


MIGRATIONS: list[Callable[[sqlite3.Connection, ArtifactFiles], None]] = [_v1, _v2, _v3, _v4, _v5, _v6]
LATEST = len(MIGRATIONS)


def version(conn: sqlite3.Connection) -> int:
    return conn.execute("PRAGMA user_version").fetchone()[0]


def shape(conn: sqlite3.Connection) -> int:
    """The newest schema whose changes the tables show, whatever user_version says."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def columns(table: str) -> set[str]:
        return {r[1] for r in conn.execute(f"PRAGMA table_info({table})")} if table in tables else set()

    if "user_history" in tables:
        return 6
    if "checksum" in columns("outbox"):
        return 5
    items = columns("items")
    if "external_id" in items:
        return 4
    if "sha256" in items:
        return 3
    if "outbox_totals" in tables:
        return 2
    return 1 if "meta" in tables else 0


def _newer(current: int) -> StorageError:
    return StorageError(f"the device database has schema v{current}, written by a newer SDK; this one reads up "
                        f"to v{LATEST}: update the app (keep the database: it may hold events not yet uploaded)")


def migrate(conn: sqlite3.Connection, files: ArtifactFiles, target: int = LATEST) -> int:
    """Bring the database to `target` (default: the newest schema); returns the version it is on."""
    current = version(conn)
    if current > LATEST:
        raise _newer(current)
    if current >= target:
        return current  # the common open: no write lock taken
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Under the write lock: another process may have migrated since the read above.
            recorded = version(conn)
            if recorded > LATEST:
                raise _newer(recorded)
            current = max(recorded, shape(conn))
            if current != recorded:
                # A version set back by the old race: the step it reran was v1's, whose
                # CREATE IF NOT EXISTS only brought back the table v2 drops.
                if current >= 2:
                    conn.execute("DROP TABLE IF EXISTS partials")
                conn.execute(f"PRAGMA user_version = {current}")
            if current >= target:
                conn.execute("COMMIT")
                return current
            try:
                MIGRATIONS[current](conn, files)
            except sqlite3.Error as exc:
                if (getattr(exc, "sqlite_errorname", "") or "").startswith(STORAGE_CODES):
                    raise  # the storage's fault: the caller names it
                raise StorageError(f"migrating the device database from schema v{current} to v{current + 1} failed "
                                   f"({exc}); nothing of that step was applied, and the database stays on "
                                   f"v{current} with everything it holds; report this with the SDK version") from exc
            conn.execute(f"PRAGMA user_version = {current + 1}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
