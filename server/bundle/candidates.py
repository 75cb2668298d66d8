"""Each user's signed candidate record: the per-user part of `publish`, for any slice of the users.

One function, `user_records`, computes the records of a list of users; `publish` runs it over every
user in one process, or over partitions of the users as Ray tasks (`partition_records`), then writes
the results in the users' order, so both ways give the same bytes. Ed25519 signatures are
deterministic (RFC 8032), so a record signed in a task is the record signed in the driver.

A task gets the catalogue's ids and vectors from Ray's object store (put there once by the driver) and
opens the rest read-only from the home: the store (the users' states and histories, SQLite or Redis),
the ANN index the driver saved under the model, the ONNX ranker and the signing key. On a cluster the
home must be on storage every node reads (and the Redis store, when it is the store, reachable).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pocketrank.shared import wire
from pocketrank.shared.features import user_vector

from ..config import Config
from ..home import Home
from ..online.ann import AnnIndexes
from ..online.catalogue import Catalogue
from ..online.encoding import SequenceEncoder, load_encoder
from ..online.ranker import Ranker


@dataclass
class Records:
    """A slice of users' records, in the slice's order: digest, signature, and the compressed record when it
    changed since the user's head (None: unchanged, only the signature is new)."""

    users: list[str] = field(default_factory=list)
    digests: list[bytes] = field(default_factory=list)
    sigs: list[bytes] = field(default_factory=list)
    blobs: list[bytes | None] = field(default_factory=list)
    sign_seconds: float = 0.0


class UserVectors:
    """Each user's vector as the server's answer computes it for this version (online/versions.VersionRanker):
    a sequence model's encoder over the user's recent events; a fold model's (or a user none of whose events
    the encoder can read) the vector of the user's folded state. A device reranks the list published here,
    so a list retrieved with any other vector is a weaker list than the server would answer."""

    def __init__(self, catalogue: Catalogue, encoder: SequenceEncoder | None):
        self.encoder, self.dim = encoder, catalogue.vectors.shape[1]
        self.vectors = catalogue.vector_map() if encoder is not None else None

    def __call__(self, store, user_id: str) -> np.ndarray:
        record = store.user_records([user_id], self.dim)[user_id]
        if self.encoder is not None:
            uv = self.encoder.user_vector(record.recent_events(), self.vectors or {})
            if uv is not None:
                return uv
        return user_vector(record.state)


@dataclass(frozen=True)
class RecordJob:
    """What every partition needs besides the catalogue arrays: small, sent with each task."""

    home: Path
    config: Config
    model_version: str
    version: int
    n_candidates: int
    run: str  # one publish run: a worker reuses its ranker across that run's partitions, never across runs


def make_ranker(catalogue: Catalogue, job: RecordJob) -> Ranker:
    """The publish ranker: above ann_min_items products its candidates come from the ANN index (built, or
    loaded from the model's ann/ folder where the first builder saved it), as the server's do."""
    model_dir = Home(job.home, job.config).model_dir(job.model_version)
    indexes = AnnIndexes(job.config.ann_min_items, background=False)  # a batch job: build or load it here
    ann = indexes.view("publish", catalogue.ids, catalogue.vectors, model_dir / "ann")
    return Ranker(catalogue, model_dir / "ranker.fp32.onnx", n_candidates=job.n_candidates, ann=ann)


def make_user_vectors(catalogue: Catalogue, job: RecordJob) -> UserVectors:
    return UserVectors(catalogue, load_encoder(Home(job.home, job.config).model_dir(job.model_version)))


def user_records(ranker: Ranker, vector_of: UserVectors, store, sign, version: int, users: Iterable[str],
                 heads: dict[str, bytes]) -> Records:
    """The records of `users` at `version`: top candidates by the ranker for the user's vector (`vector_of`),
    best first (ties by id), packed, signed with `sign`; compressed only where the digest differs from the
    user's head."""
    out = Records()
    for user_id in users:
        uv = vector_of(store, user_id)
        ids = ranker.retrieve(uv, store.consumed_items(user_id))
        scores = ranker.score(uv, ids)
        order = np.lexsort((ids, -scores))  # best first, ties by id
        raw = wire.pack_candidates_raw(ids[order], scores[order])
        digest = wire.sha256_digest(raw)
        t0 = time.perf_counter()
        sig = sign(wire.record_message(version, user_id, digest))
        out.sign_seconds += time.perf_counter() - t0
        out.users.append(user_id)
        out.digests.append(digest)
        out.sigs.append(sig)
        out.blobs.append(wire.compress(raw) if heads.get(user_id) != digest else None)
    return out


# A Ray worker runs many partitions of one publish: the ranker (ONNX session, ANN index) and the user
# vectors (the encoder's session) are made once.
_worker_ranker: dict[str, tuple[Ranker, UserVectors]] = {}


def partition_records(ids: np.ndarray, vectors: np.ndarray, job: RecordJob,
                      part: tuple[list[str], dict[str, bytes]]) -> Records:
    """A Ray task: the records of one partition of users (`part`: the users and their heads)."""
    from pocketrank.exporter.signing import load_private  # never a new key: a worker must sign with the home's

    made = _worker_ranker.get(job.run)
    if made is None:
        _worker_ranker.clear()
        catalogue = Catalogue(ids, vectors, {}, {})
        made = _worker_ranker[job.run] = (make_ranker(catalogue, job), make_user_vectors(catalogue, job))
    ranker, vector_of = made
    home = Home(job.home, job.config)
    store = home.store()
    try:
        return user_records(ranker, vector_of, store, load_private(home.keys).sign, job.version, part[0], part[1])
    finally:
        store.close()
