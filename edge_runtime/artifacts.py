"""Bundle artifacts (models, item vectors, catalogue) as immutable, content-addressed files.

Why files and not SQLite blobs: a model file is what an ONNX runtime on a phone
loads (and may memory-map), and a blob of several MB would be written twice
(WAL, then checkpoint) on every sync. Why content-addressed: a file is never
changed in place, so a "swap" is only the database switching which sha256 it
points at, inside the sync's one transaction. The order that makes a crash at
any point safe:

1. write `<sha>.tmp.<unique>`, fsync it, rename it to `<sha>`, fsync the directory (the temporary name
   is unique per write, not per process: two threads writing one sha256 never share a file);
2. load and check the new model;
3. commit the transaction that points the database at the new sha256;
4. only then delete the files the previous version used.

A crash before 3 leaves the old version referenced with its files intact (the
new file is an orphan, removed later); a crash after 3 leaves the new version
with its file complete. Every read checks the sha256, so a file damaged on disk
is refused, never served.
"""

from __future__ import annotations

import errno
import os
import tempfile
import time
from pathlib import Path

from pocketrank.shared.wire import sha256_hex

from .errors import IntegrityError, StorageError

PARTIAL = ".part"


def _storage_error(exc: OSError, what: str) -> StorageError:
    hint = "free some space" if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) else "check the app's storage"
    return StorageError(f"{what}: {exc.strerror or exc}; {hint}, then sync again")


class ArtifactFiles:
    def __init__(self, directory: Path | str):
        self.dir = Path(directory)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _storage_error(exc, f"cannot create {self.dir}") from exc

    def path(self, sha: str) -> Path:
        return self.dir / sha

    def has(self, sha: str, length: int | None = None) -> bool:
        try:
            size = self.path(sha).stat().st_size
        except FileNotFoundError:
            return False
        return length is None or size == length

    def read(self, sha: str) -> bytes:
        """The file's bytes, or IntegrityError if it is missing or no longer matches its sha256."""
        try:
            data = self.path(sha).read_bytes()
        except FileNotFoundError as exc:
            raise IntegrityError(f"artifact {sha[:12]} is missing on the device; sync again") from exc
        if sha256_hex(data) != sha:
            raise IntegrityError(f"artifact {sha[:12]} is damaged on the device (sha256 mismatch); sync again")
        return data

    def put(self, sha: str, data: bytes) -> None:
        """Store `data` under its sha256, durably and atomically; a no-op if it is already there."""
        if sha256_hex(data) != sha:
            raise IntegrityError(f"refusing to store bytes under sha256 {sha[:12]}: they do not match it")
        if self.has(sha, len(data)):
            return
        tmp: Path | None = None
        try:
            tmp = self._temp(sha)
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path(sha))
            self._sync_dir()
        except OSError as exc:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
            raise _storage_error(exc, f"cannot write artifact {sha[:12]}") from exc

    def _temp(self, stem: str) -> Path:
        """A new empty file `<stem>.tmp.<random>` of this writer alone (threads of one process share a pid)."""
        fd, name = tempfile.mkstemp(prefix=f"{stem}.tmp.", dir=self.dir)
        os.close(fd)
        return Path(name)

    def verify(self, sha: str, length: int) -> bool:
        """True when the file is there with exactly `length` bytes and its sha256; a damaged copy is removed
        (so the next download does not take it for held)."""
        try:
            self.read(sha)
            ok = self.has(sha, length)
        except IntegrityError:
            ok = False
        if not ok:
            self.path(sha).unlink(missing_ok=True)
        return ok

    # --- partial downloads, kept so that a retry resumes ---

    def partial(self, sha: str) -> bytes:
        try:
            return (self.dir / (sha + PARTIAL)).read_bytes()
        except FileNotFoundError:
            return b""

    def save_partial(self, sha: str, data: bytes) -> None:
        # Best effort: losing a partial only costs a download from the start.
        tmp: Path | None = None
        try:
            tmp = self._temp(sha + PARTIAL)
            tmp.write_bytes(data)
            os.replace(tmp, self.dir / (sha + PARTIAL))
        except OSError:
            if tmp is not None:
                tmp.unlink(missing_ok=True)

    def drop_partial(self, sha: str) -> None:
        (self.dir / (sha + PARTIAL)).unlink(missing_ok=True)

    # --- garbage collection ---

    def gc(self, keep: set[str], grace: float = 3600.0, now: float | None = None) -> list[str]:
        """Delete files not in `keep`, unless younger than `grace` seconds.

        The grace period protects a sync running in another process (the app
        and the CLI on one database), whose new files are not referenced until
        it commits; it also lets an interrupted download resume within it.
        """
        now = time.time() if now is None else now
        removed = []
        for p in self.dir.iterdir():
            name = p.name
            if name in keep:  # a complete file; its stray temp or partial copies go too
                continue
            try:
                if now - p.stat().st_mtime < grace:
                    continue
                p.unlink()
                removed.append(name)
            except OSError:
                continue
        return removed

    def _sync_dir(self) -> None:
        # The rename is durable only once the directory entry is on disk.
        try:
            fd = os.open(self.dir, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)
