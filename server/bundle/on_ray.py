"""The partitioned steps of one `publish` on Ray: the users' records, and the catalogue's item entries.

The catalogue's ids and vectors go into Ray's object store once, for every task of both steps. Each
step runs the single process's own function over a slice (candidates.user_records over a slice of
the users, item_entries.build_entries over a slice of the catalogue) and hands back the slices in order,
so publish writes what it would have written alone. A task signs with the home's key (Ed25519 is
deterministic, so the signatures are the same bytes); the home must be on storage every node reads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from ..home import Home
from ..online.catalogue import Catalogue
from ..ray_tasks import cluster_cpus, run_partitions, split
from . import item_entries
from .candidates import RecordJob, Records, partition_records
from .item_entries import ItemEntry

# Users (items) per partition at most: a partition's results travel back to the driver whole (about 600
# bytes a user, 300 an item); and at least two partitions per worker CPU, so that one slow partition
# does not leave the other workers idle at the end.
PARTITION_USERS = 50_000
PARTITION_ITEMS = 100_000


class RayPublish:
    def __init__(self, ray, catalogue: Catalogue, job: RecordJob):
        self.ray, self.catalogue, self.job = ray, catalogue, job
        self.shared = (ray.put(catalogue.ids), ray.put(catalogue.vectors), ray.put(job))

    def partitions(self, n: int, most: int) -> int:
        return max(2 * cluster_cpus(self.ray), -(-n // most))

    def records(self, users: list[str], heads: dict[str, bytes], advance: Callable[[int], object]) -> list[Records]:
        """Every user's record, as candidates.user_records makes them, in `users`' order (one Records a slice)."""
        slices = split(users, self.partitions(len(users), PARTITION_USERS))
        parts = [(list(s), {u: heads[u] for u in s if u in heads}) for s in slices]
        return run_partitions(self.ray, partition_records, parts, shared=self.shared,
                              done=lambda i: advance(len(slices[i])))

    def entries(self, meta: Mapping[int, dict], previous: Mapping[int, ItemEntry] | None,
                previous_model: str | None) -> dict[int, ItemEntry]:
        """item_entries.build_entries over the whole catalogue, computed in slices of it."""
        ids = self.catalogue.ids
        bounds = split(range(len(ids)), self.partitions(len(ids), PARTITION_ITEMS))
        parts = []
        for r in bounds:
            chunk = ids[r.start:r.stop].tolist()
            parts.append((r.start, r.stop, {i: meta[i] for i in chunk if i in meta},
                          None if previous is None else {i: previous[i] for i in chunk if i in previous},
                          previous_model))
        out: dict[int, ItemEntry] = {}
        for part in run_partitions(self.ray, partition_entries, parts, shared=self.shared):
            out.update(part)
        return out


def partition_entries(ids: np.ndarray, vectors: np.ndarray, job: RecordJob,
                      part: tuple[int, int, dict, dict | None, str | None]) -> dict[int, ItemEntry]:
    """A Ray task: the item entries of catalogue rows [lo, hi)."""
    from pocketrank.exporter.signing import load_private  # never a new key: a worker must sign with the home's

    lo, hi, meta, previous, previous_model = part
    sign = load_private(Home(job.home, job.config).keys).sign
    return item_entries.build_entries(ids[lo:hi], vectors[lo:hi], meta, job.model_version, job.version, sign,
                                      previous, previous_model)
