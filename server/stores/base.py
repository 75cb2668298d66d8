"""The one interface every store implements, and the records that cross it.

Four things live behind it: the item catalogue (metadata and vectors), the
append-only event log with the updater's position in it, each user's online
record (folded state, recent sequence, position of the last event applied)
and the small derived tables the ranker reads (item stats, window features,
bundle records, meta). SQLite is the embedded default; Redis is the
scale-out path. tests/server/stores/test_store_contract.py runs one suite against both.
"""

from __future__ import annotations

import struct
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field

import numpy as np

from pocketrank.shared.features import UserState
from pocketrank.shared.schemas import EVENT_TYPES, Event, Item

# Actions after which an item is not recommended to that user again.
CONSUMED_TYPES = ("click", "add_to_cart", "purchase")

# One entry of a user's recent sequence: 13 bytes, so 50 events fit in 650.
RECENT_DTYPE = np.dtype([("ts", "<f8"), ("item", "<i4"), ("type", "u1")])
TYPE_CODE = {t: i for i, t in enumerate(EVENT_TYPES)}
NO_ITEM = 0  # item ids start at 1 (pocketrank.shared.schemas), so 0 marks "no item" (a search)
RECORDS_EPOCH = "records_epoch"  # meta key renewed by every put_records: what cached sync answers are keyed by


@dataclass(frozen=True)
class LogEntry:
    """An event and its position in the log (monotonic, unique per event)."""

    pos: int
    event: Event


@dataclass
class UserRecord:
    """What the online store keeps per user: the folded state and the recent sequence."""

    state: UserState
    last_pos: int = 0  # log position of the last event folded in: replays below it are skipped
    recent: np.ndarray = field(default_factory=lambda: np.zeros(0, RECENT_DTYPE))
    updated_at: float = 0.0

    @classmethod
    def empty(cls, dim: int) -> UserRecord:
        return cls(UserState.empty(dim))

    def recent_events(self) -> list[dict]:
        return [{"type": EVENT_TYPES[int(r["type"])], "item_id": int(r["item"]) or None, "timestamp": float(r["ts"])}
                for r in self.recent]


def push_recent(recent: np.ndarray, event: Event, keep: int) -> np.ndarray:
    if keep <= 0:
        return recent[:0]
    kept = recent[len(recent) - keep + 1:] if len(recent) >= keep else recent
    out = np.empty(len(kept) + 1, dtype=RECENT_DTYPE)
    out[:-1] = kept
    out[-1] = (event.timestamp, event.item_id or NO_ITEM, TYPE_CODE[event.type])
    return out


def pack_recent(recent: np.ndarray) -> bytes:
    return np.ascontiguousarray(recent, dtype=RECENT_DTYPE).tobytes()


def unpack_recent(blob: bytes | None) -> np.ndarray:
    """A read-only view of the stored bytes (push_recent and append_recent build new arrays)."""
    return np.frombuffer(blob, dtype=RECENT_DTYPE) if blob else np.zeros(0, RECENT_DTYPE)


_RECENT_ROW = struct.Struct("<diB")  # RECENT_DTYPE's packed layout, 13 bytes


def append_recent(recent: np.ndarray, rows: list[tuple[float, int, int]], keep: int) -> np.ndarray:
    """push_recent for several events at once: rows of (timestamp, item id or NO_ITEM, TYPE_CODE).

    Works on the packed bytes (a few times faster than numpy's structured-array copies,
    and the updater runs it for every user of every batch)."""
    if keep <= 0:
        return recent[:0]
    blob = recent.tobytes() + b"".join([_RECENT_ROW.pack(*r) for r in rows])
    return np.frombuffer(blob[-keep * RECENT_DTYPE.itemsize:], dtype=RECENT_DTYPE)


@dataclass(frozen=True)
class RecordRow:
    """One entry of the record change log: a user's candidate record as of the bundle version it changed in."""

    version: int
    blob: bytes  # zstd frame of the raw PRC2 record (PRC1 in rows published before wire 3)
    sha256: bytes  # 32 bytes: sha256 of the raw (uncompressed) record, what record signatures cover
    sig: bytes  # ed25519 over pocketrank.shared.wire.record_message(version, user_id, sha256)


@dataclass
class UserContext:
    """Everything a ranking request needs about one user, read in one go."""

    record: UserRecord
    consumed: set[int]
    features: dict | None


@dataclass
class Updates:
    """What one updater step writes: records, and the item counters it moved."""

    records: dict[str, UserRecord] = field(default_factory=dict)
    consumed: dict[str, set[int]] = field(default_factory=dict)
    popularity: dict[int, int] = field(default_factory=dict)  # + consumed-type events per item
    exposures: dict[int, int] = field(default_factory=dict)  # + impressions per item


class Store(ABC):
    """The online store. Implementations must be safe to share between threads."""

    backend: str = ""

    # --- meta ---

    @abstractmethod
    def get_meta(self, key: str, default: str | None = None) -> str | None: ...

    @abstractmethod
    def set_meta(self, key: str, value: str) -> None: ...

    # --- catalogue ---

    @abstractmethod
    def put_items(self, items: Iterable[Item], vectors: dict[int, np.ndarray] | None = None,
                  provisional: Iterable[int] = ()) -> list[Item]:
        """Insert or update items; returns them as stored. An item whose index is 0 gets the
        index its product id (`sku`) already has, or the next free one: indexes are never
        reused or changed, so they stay stable across retrains. A given vector (keyed by
        index) replaces the stored one; items named in `provisional` are marked as carrying
        a content-only vector, and any other item given a vector is marked trained. Bumps
        catalogue_version."""

    @abstractmethod
    def item_index(self, skus: Iterable[str]) -> dict[str, int]:
        """The index of every known product id among `skus` (unknown ones are left out)."""

    @abstractmethod
    def items(self) -> list[Item]: ...

    @abstractmethod
    def get_items(self, item_ids: Iterable[int]) -> dict[int, Item]: ...

    @abstractmethod
    def item_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of every item that has a vector, ordered by id."""

    @abstractmethod
    def provisional_items(self) -> set[int]: ...

    def catalogue_version(self) -> int:
        return int(self.get_meta("catalogue_version", "0") or 0)

    # --- event log ---

    @abstractmethod
    def append_events(self, events: list[Event]) -> list[bool]:
        """Log events durably before returning; per event True if new, False if
        its event_id was seen before (then nothing changes)."""

    @abstractmethod
    def conflicting(self, events: list[Event]) -> list[bool]:
        """For events that append_events answered False (already logged): per event, True when the
        event logged under its id differs in content (the id was reused for another event: a
        conflict, not a retry). An id whose logged content can no longer be read is no conflict."""

    @abstractmethod
    def import_events(self, events: Iterable[Event]) -> int:
        """Bulk-load a history (item ids resolved to indexes); an event_id already logged is
        skipped. Returns how many were new. Call pocketrank.server.online.fold.rebuild_states after."""

    def import_event_columns(self, event_id: list, user_id: list, device_id: list, type: list, item_id: list,
                             query: list, timestamp: list, session_id: list) -> int:
        """import_events for equal-length columns (item_id: indexes, None for a search; no context): what
        the file importer writes. Stores override it to skip building an Event per row."""
        return self.import_events(list(map(Event, event_id, user_id, device_id, type, timestamp, item_id, query,
                                           session_id)))

    def interactions(self, types: tuple[str, ...], since: float | None = None, until: float | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(user ids, item indexes, timestamps, TYPE_CODEs) of logged events of `types` that carry an
        item, with since <= timestamp < until, ordered by timestamp then log position. Stores override
        this with one query; this reads the whole log."""
        rows = sorted((e.event.timestamp, e.pos, e.event.user_id, e.event.item_id, TYPE_CODE[e.event.type])
                      for e in self.iter_log()
                      if e.event.type in types and e.event.item_id is not None
                      and (since is None or e.event.timestamp >= since) and (until is None or e.event.timestamp < until))
        return (np.array([r[2] for r in rows], dtype=object), np.array([r[3] for r in rows], dtype=np.int64),
                np.array([r[0] for r in rows], dtype=np.float64), np.array([r[4] for r in rows], dtype=np.int8))

    def log_head(self) -> int:
        """The newest log position (0 when the log is empty). Stores answer it with one query."""
        pos = 0
        for entry in self.iter_log(0):
            pos = entry.pos
        return pos

    @abstractmethod
    def count_events(self, event_ids: list[str] | None = None) -> int: ...

    @abstractmethod
    def iter_log(self, after: int = 0) -> Iterator[LogEntry]:
        """Every logged event after position `after`, in log order."""

    # --- the updater's consumer position ---

    def updater_session(self, timeout: float = 30.0) -> AbstractContextManager:
        """Held while an updater drains (many steps), so only one process folds at
        a time and every user's events are applied in log order."""
        return nullcontext()

    def consumer_session(self, timeout: float = 30.0) -> AbstractContextManager:
        """Held by one of several updater processes while it consumes (Updater.run): on a store
        whose log is partitioned (Redis Cluster) a share of the partitions, so the processes fold
        side by side; elsewhere the same as updater_session."""
        return self.updater_session(timeout)

    def updater_step(self) -> AbstractContextManager:
        """Held around one step, from claim_events to commit_updates."""
        return nullcontext()

    def ingest_tx(self) -> AbstractContextManager:
        """Spans a request's append and its fold, where the store can make them one
        transaction (SQLite: one commit, one fsync per request)."""
        return nullcontext()

    def savepoint(self) -> AbstractContextManager:
        """Inside ingest_tx: a failure in here undoes only what happened in here."""
        return nullcontext()

    @contextmanager
    def updater_lock(self, timeout: float = 30.0) -> Iterator[None]:
        """A session of one step."""
        with self.updater_session(timeout), self.updater_step():
            yield

    # True if claim_events can wait for new events itself (a Redis consumer group can).
    claim_blocks: bool = False

    # True if claim_events may answer fewer than `limit` events while more wait (a partitioned log
    # answers one partition per call): then the updater drains until a claim comes back empty.
    partial_claims: bool = False

    # True if writers take turns at one lock anyway (SQLite): then concurrent requests of a
    # process gain by sharing one commit, even when they only append (Updater.ingest).
    serial_writes: bool = False

    @abstractmethod
    def claim_events(self, limit: int, block: float = 0.0) -> list[LogEntry]:
        """The next events the updater has not acknowledged, oldest first. After a
        crash the unacknowledged ones come back first. Call inside updater_step.
        Stores with claim_blocks wait up to `block` s for new events; others ignore it."""

    @abstractmethod
    def commit_updates(self, updates: Updates, entries: list[LogEntry]) -> None:
        """Write an updater step and acknowledge `entries`, atomically."""

    @abstractmethod
    def pending_count(self) -> int:
        """Events logged but not yet acknowledged by the updater."""

    @abstractmethod
    def wait_for_events(self, timeout: float) -> bool:
        """Block up to `timeout` s until unacknowledged events exist; True if so."""

    # --- users ---

    @abstractmethod
    def user_records(self, user_ids: Iterable[str], dim: int) -> dict[str, UserRecord]:
        """Records of the given users; unknown users get an empty record."""

    @abstractmethod
    def has_user(self, user_id: str) -> bool: ...

    @abstractmethod
    def put_user_records(self, records: dict[str, UserRecord]) -> None:
        """Write records as they are (bulk seeding; the updater uses commit_updates)."""

    @abstractmethod
    def user_ids(self) -> list[str]: ...

    @abstractmethod
    def consumed_items(self, user_id: str) -> set[int]: ...

    @abstractmethod
    def user_context(self, user_id: str, dim: int) -> UserContext: ...

    def user_state(self, user_id: str, dim: int) -> UserState:
        return self.user_records([user_id], dim)[user_id].state

    @abstractmethod
    def reset_derived(self, records: dict[str, UserRecord], consumed: dict[str, set[int]],
                      popularity: dict[int, int], position: int) -> None:
        """Replace every user record and item counter, and set the updater's
        position (used by pocketrank.server.online.fold.rebuild_states after retraining changes vectors)."""

    # --- item stats, window features, segments ---

    @abstractmethod
    def item_counts(self) -> dict[int, int]:
        """Consumed-type events per item (popularity)."""

    @abstractmethod
    def exposures(self) -> dict[int, int]:
        """Impressions per item since the features job last reset them."""

    @abstractmethod
    def set_exposures(self, counts: dict[int, int]) -> None: ...

    @abstractmethod
    def put_profiles(self, profiles: dict[str, dict[str, str]]) -> None:
        """Insert or replace users' attributes (age band, region, plan...): what segments are built from."""

    @abstractmethod
    def profiles(self) -> dict[str, dict[str, str]]:
        """Every user's imported attributes."""

    @abstractmethod
    def put_features(self, features: dict[str, dict]) -> None:
        """Replace every user's window aggregates (the features job's output)."""

    @abstractmethod
    def features(self, user_id: str) -> dict | None: ...

    # --- bundle records: the publisher's change log of per-user candidate lists ---
    # A row is stored only when a user's record changed; every user present in
    # a version also gets that version's record signature (64 bytes), which is
    # all a device holding the unchanged record needs.

    @abstractmethod
    def put_records(self, version: int, changed: dict[str, RecordRow], sigs: dict[str, bytes]) -> None:
        """Write the rows of users whose record changed in `version`, and every user's signature for it;
        and set meta "records_epoch" to a fresh token (what cached sync answers are keyed by)."""

    @abstractmethod
    def records_at(self, version: int, user_ids: list[str]) -> dict[str, RecordRow]:
        """Each user's record as of `version` (the newest row at or before it); users without one are left out."""

    @abstractmethod
    def record_sigs(self, version: int, user_ids: list[str]) -> dict[str, bytes]:
        """The record signatures of `version` for the users it has a record for."""

    @abstractmethod
    def record_heads(self) -> dict[str, bytes]:
        """Every user's newest record sha256 (what the next publish compares against)."""

    @abstractmethod
    def compact_records(self, keep_from: int) -> int:
        """Drop history no cursor >= keep_from needs: signatures of older versions, and rows older than
        keep_from that a newer row at or before keep_from supersedes. Returns the rows deleted."""

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op for stores without connections
        """Release connections held by the calling thread."""
