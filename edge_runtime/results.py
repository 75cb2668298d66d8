"""What the SDK's calls return: plain dataclasses an app can log, compare or turn into JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

SOURCES = ("server", "edge", "cache", "popular")


@dataclass
class RecommendedItem:
    item_id: str  # the product's own id (the marketplace's), on every path: what track() takes back
    score: float
    rank: int
    title: str = ""
    category: str = ""
    source: str = ""  # which of SOURCES produced this item; top-ups from popular say "popular"
    stale: bool = False  # from a candidate list older than the client's stale_after
    price: float | None = None  # from the item's entry, or the server's answer; None when neither has it


@dataclass
class Recommendation:
    items: list[RecommendedItem]
    source: str  # server | edge | cache | popular: where the list as a whole came from
    model_version: str | None = None
    candidates_version: int | None = None
    stale: bool = False
    latency_ms: float = 0.0
    reason: str = ""  # why the server was not used, when it was not

    @property
    def item_ids(self) -> list[str]:
        return [i.item_id for i in self.items]

    def to_dict(self) -> dict:
        return {**asdict(self), "item_ids": self.item_ids}


@dataclass
class SyncResult:
    version: int
    changed: bool
    bytes_downloaded: int = 0
    artifacts_fetched: list[str] = field(default_factory=list)
    users_updated: list[str] = field(default_factory=list)
    users_unchanged: list[str] = field(default_factory=list)  # held records confirmed by a new signature, not re-sent
    unknown_users: list[str] = field(default_factory=list)
    users_delta: list[str] = field(default_factory=list)  # of users_updated, those that came as a delta
    snapshot: bool = False  # the server sent every record whole (first sync, or a cursor past its history)
    deferred: str | None = None  # why a newer version was left pending (wifi_only: its model waits for wifi)
    # Item entries by index (the sync answer's keys; the entries map them to the products' own ids):
    items_received: list[int] = field(default_factory=list)  # entries applied (new, changed, or asked for)
    items_dropped: list[int] = field(default_factory=list)  # held entries no list references any more


@dataclass
class FlushResult:
    sent: int = 0
    acknowledged: int = 0
    rejected: int = 0
    redated: int = 0  # refused as dated in the server's future; re-dated by its clock and sent again
    quarantined: int = 0  # found damaged on the device: set aside, never sent (status()["quarantined"])
    remaining: int = 0
    batches: int = 0
    error: str | None = None
    retry_in: float | None = None  # seconds until uploads may be tried again, when backing off
