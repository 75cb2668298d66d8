"""Importing several files of one kind: one after another, or parsed in parallel as Ray tasks.

    reports = import_files(home, "events", ["events-2025.parquet", "events-2026.parquet"])
    reports = import_files(home, "events", files, ray_address="local")     # docs/scaling.md

On Ray each file is one task: it reads and checks the file (server/data/importer.py's parse_file, the
same checks a single-process import makes, product ids resolved read-only against the store's
catalogue) and streams the accepted rows back; this process writes them to the store in the order of
the files and, within a file, of its rows, as a single-process import does. So the store ends the same
(the same events at the same log positions, the same products), and a file's report counts the same.
A catalogue must be imported before the events that name its products, as always (a separate call).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..config import Config
from ..home import Home
from .importer import import_catalogue, import_events, parse_file, write_parsed
from .report import ImportReport

KINDS = ("catalogue", "events")


def import_files(home: Home, kind: str, files: Sequence[str | Path], *, fmt: str | None = None,
                 mapping: Mapping[str, str] | None = None, time_unit: str = "auto", progress: bool = True,
                 ray_address: str | None = None) -> list[ImportReport]:
    """Import `files` ("catalogue" or "events") into the home's store, one report per file in their order.
    `ray_address` (default: the ray_address setting; "" = this process) parses the files as Ray tasks."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    config = home.config or Config.from_env(home=home.root)
    if ray_address is None:
        ray_address = config.ray_address
    options: dict[str, Any] = {"fmt": fmt, "mapping": dict(mapping or {}), "time_unit": time_unit}
    store = home.store()
    try:
        if not ray_address:
            job = import_events if kind == "events" else import_catalogue
            return [job(store, f, progress=progress, **options) for f in files]
        return _on_ray(ray_address, store, FileJob(home.root, config, kind, options), list(files), progress)
    finally:
        store.close()


class FileJob:
    """What every file's task needs: where the store is, and how to read the files."""

    def __init__(self, home: Path, config: Config, kind: str, options: dict[str, Any]):
        self.home, self.config, self.kind, self.options = home, config, kind, options


def parse_task(job: FileJob, file: str | Path) -> Iterator[tuple[str, Any]]:
    """A Ray task: one file checked (the store opened for reading product ids), its parts streamed back."""
    store = Home(job.home, job.config).store()
    try:
        yield from parse_file(store, job.kind, file, **job.options)
    finally:
        store.close()


def _on_ray(address: str, store, job: FileJob, files: list[str | Path], progress: bool) -> list[ImportReport]:
    from ..ray_tasks import ray_session, stream_partitions

    # Absolute paths: a worker's working directory is not this process's.
    files = [Path(f).resolve() for f in files]
    with ray_session(address) as ray, tqdm(total=len(files), desc=f"importing {job.kind}", unit="file",
                                           disable=not progress, leave=False) as bar:
        stream = stream_partitions(ray, parse_task, files, shared=(job,))
        reports = []
        for i in range(len(files)):
            reports.append(write_parsed(store, (part for _, part in _while_file(stream, i))))
            bar.update(1)
        return reports


def _while_file(stream: Iterator[tuple[int, Any]], i: int) -> Iterator[tuple[int, Any]]:
    """The stream's values of file i (each file's stream ends with its report)."""
    for j, part in stream:
        assert j == i, "streams come file by file"
        yield j, part
        if part[0] == "report":
            return
