"""Importing a marketplace's own catalogue and event history (CSV, JSON Lines, Parquet) into a store.

    report = import_catalogue(store, "products.csv")
    report = import_events(store, "events.parquet", mapping={"user_id": "customer_id"})
    print(report.summary())

`source` is a path, or an Arrow table already in the canonical schema (what the MovieLens importer
hands over). Canonical columns (docs/data.md has the details):

- catalogue: item_id (the product's own id), title, category ("A > B"), categories (a list, or text
  separated by "|"), year, price, currency, in_stock or stock, attributes (a JSON object, as text or
  a struct), created_at (a timestamp).
- events: event_id (optional), user_id, item_id (the product's own id; not needed on a search),
  type (pocketrank.shared.schemas.EVENT_TYPES), timestamp, query (searches), session_id (optional),
  device_id (optional, default "import").

Every row is checked with pocketrank.shared.schemas' rules (validate_item row by row; for events the same
decisions column-wise, server/data/checks.py). A bad row is reported by its line and field and
skipped; the rows around it are imported. Events naming a product the catalogue does not have are
rejected. Importing a file twice adds nothing: an event's id is its event_id, or, where the file
has none, its content key (`content_key`); a product is upserted by its id, and one whose data did
not change is not rewritten. Each batch is written in one store transaction, so a row is written
whole or not at all.
"""

from __future__ import annotations

import hashlib
import json
import math
import queue
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pocketrank.shared.errors import DataError, ValidationError
from pocketrank.shared.schemas import Event, Item, validate_item

from . import checks, formats, timestamps
from .report import ImportReport

EVENT_COLUMNS = ("event_id", "user_id", "item_id", "type", "timestamp", "query", "session_id", "device_id")
CATALOGUE_COLUMNS = ("item_id", "title", "category", "categories", "year", "price", "currency", "in_stock", "stock",
                     "attributes", "created_at")
DEFAULT_DEVICE = "import"
EVENT_BATCH_ROWS = 200_000
CATALOGUE_BATCH_ROWS = 20_000
_KEY_SEPARATOR = "\x1f"


# --- the content key ---


def content_key(user_id: str, item_id: str | None, type: str, timestamp: float, query: str | None) -> str:
    """The event_id given to an imported event that has none, 36 characters:

        "k" + the timestamp in whole milliseconds (rounded half to even) as 11 hex digits
            + hex(blake2b(user_id, item_id or "", type, those milliseconds in decimal, query or "";
                          joined by U+001F, UTF-8, digest_size=12))

    (query stripped, item_id the product's own id). Identical events within the same millisecond
    count once. The time prefix keeps the log's unique index on event_id growing at its end when a
    file is in time order, which is several times faster to write than random keys."""
    ms = int(np.rint(timestamp * 1000.0))
    data = _KEY_SEPARATOR.join((user_id, item_id or "", type, str(ms), query or "")).encode("utf-8")
    return f"k{ms:011x}{hashlib.blake2b(data, digest_size=12).hexdigest()}"


def content_keys(user_id: pa.Array, item_id: pa.Array, type: pa.Array, timestamp: np.ndarray,
                 query: pa.Array) -> list[str]:
    """content_key of every row, column-wise."""
    ms = np.rint(timestamp * 1000.0).astype(np.int64)
    joined = pc.binary_join_element_wise(user_id, pc.fill_null(item_id, ""), type, pa.array(ms).cast(pa.string()),
                                         pc.fill_null(query, ""), _KEY_SEPARATOR)
    offsets = np.frombuffer(joined.buffers()[1], dtype=np.int32)[joined.offset:joined.offset + len(joined) + 1]
    data = memoryview(joined.buffers()[2] or b"")
    b2 = hashlib.blake2b
    return [f"k{t:011x}{b2(data[s:e], digest_size=12).hexdigest()}"
            for t, s, e in zip(ms.tolist(), offsets[:-1].tolist(), offsets[1:].tolist())]


# --- product ids to the store's indexes ---


class ItemIndex:
    """Product ids -> store indexes, asking the store only about ids not seen before (0: unknown)."""

    def __init__(self, store):
        self.store = store
        self.keys = pa.array([], pa.string())
        self.index = np.zeros(0, dtype=np.int64)

    def resolve(self, skus: pa.Array) -> np.ndarray:
        unique = pc.unique(skus)
        fresh = unique.filter(pc.is_null(pc.index_in(unique, value_set=self.keys)))
        if len(fresh):
            names = fresh.to_pylist()
            found: dict[str, int] = {}
            for i in range(0, len(names), 10_000):
                found.update(self.store.item_index(names[i:i + 10_000]))
            self.keys = pa.concat_arrays([self.keys, fresh])
            self.index = np.concatenate([self.index, np.array([found.get(s, 0) for s in names], dtype=np.int64)])
        pos = pc.index_in(skus, value_set=self.keys).to_numpy(zero_copy_only=False)
        return self.index[pos.astype(np.int64)]


# --- shared plumbing ---


def _check_mapping(mapping: Mapping[str, str] | None, allowed: Sequence[str], kind: str) -> dict[str, str]:
    mapping = dict(mapping or {})
    for canonical, column in mapping.items():
        if canonical not in allowed:
            raise DataError(f"cannot map {canonical}={column}: {kind} have no field {canonical!r} "
                            f"(fields: {', '.join(allowed)})")
        if not column:
            raise DataError(f"the mapping for {canonical} names no column")
    return mapping


def _require(src: formats.Source, required: Sequence[str], kind: str) -> None:
    have = set(formats.rename(src.columns or (), src.mapping))
    missing = [c for c in required if c not in have]
    if missing:
        shown = ", ".join(src.columns or ()) or "none"
        raise DataError(f"the {kind} file has no {' or '.join(missing)} column (its columns: {shown}); "
                        f"name the file's column with a mapping such as {missing[0]}=COLUMN")


def _progress(src: formats.Source, kind: str, enabled: bool):
    from tqdm import tqdm

    unit = "B" if src.progress_unit == "bytes" else " rows"
    return tqdm(total=src.total, unit=unit, unit_scale=True, unit_divisor=1024 if unit == "B" else 1000,
                desc=f"importing {kind}", disable=not enabled, leave=False, dynamic_ncols=True)


def _run(src: formats.Source, report: ImportReport, required: Sequence[str], progress: bool, step) -> ImportReport:
    for _ in _steps(src, report, required, progress, step):
        pass
    return report


def _steps(src: formats.Source, report: ImportReport, required: Sequence[str], progress: bool, step) -> Iterator[None]:
    """Read the file batch by batch, `step(batch)` on each; yields after each step (a parse on Ray hands
    the batch's rows on from there)."""
    start = time.perf_counter()
    checked = False
    if src.columns is not None:
        _require(src, required, report.kind)
        checked = True
    with _progress(src, report.kind, progress) as bar:
        done = 0
        for batch in formats.prefetch(src.batches()):
            if not checked and src.columns is not None:
                _require(src, required, report.kind)
                checked = True
            step(batch)
            yield
            if batch.done > done:
                bar.update(batch.done - done)
                done = batch.done
    report.ignored_columns = list(src.ignored)
    report.seconds = time.perf_counter() - start


def _open(source, fmt, mapping, wanted, text_columns, batch_rows) -> formats.Source:
    return formats.open_source(source, fmt, mapping, wanted=wanted, text_columns=text_columns, batch_rows=batch_rows)


def _name(source) -> str:
    return "<table>" if isinstance(source, pa.Table) else Path(source).name


# --- events ---


def import_events(store, source: str | Path | pa.Table, *, fmt: str | None = None,
                  mapping: Mapping[str, str] | None = None, time_unit: str = "auto", progress: bool = True,
                  batch_rows: int = EVENT_BATCH_ROWS) -> ImportReport:
    """Import an event history into `store` (the catalogue must be imported first); see the module."""
    mapping = _check_mapping(mapping, EVENT_COLUMNS, "events")
    src = _open(source, fmt, mapping, EVENT_COLUMNS, ("event_id", "user_id", "device_id", "session_id", "item_id"),
                batch_rows)
    report = ImportReport("events", _name(source), src.format, src.position)
    job = _EventImport(store, report, timestamps.TimeParser(time_unit), src.position)
    required = ("user_id", "type", "timestamp") + (() if src.format == "jsonl" else ("item_id",))
    start = time.perf_counter()
    job.writer = _Writer(store, report)
    try:
        _run(src, report, required, progress, job.batch)
    except BaseException:
        job.writer.close(check=False)
        raise
    job.writer.close()
    report.seconds = time.perf_counter() - start
    report.time_unit = job.times.unit if job.times.unit in ("s", "ms") else None
    return report


class _EventImport:
    writer: _Writer  # set by the import that drives this job

    def __init__(self, store, report: ImportReport, times: timestamps.TimeParser, position: str):
        self.store, self.report, self.times = store, report, times
        self.items = ItemIndex(store)
        self.malformed = "line" if position == "line" else "row"

    def reason(self, code: int) -> tuple[str, str]:
        f, message = checks.REASONS[code]
        if code == checks.TS_UNPARSABLE:
            return f, self.times.reason(timestamps.UNPARSABLE)
        if code == checks.TS_RANGE:
            return f, self.times.reason(timestamps.OUT_OF_RANGE)
        return f, message

    def batch(self, batch: formats.Batch) -> None:
        n = batch.num_rows
        report = self.report
        report.rows_read += n + len(batch.bad)
        malformed = [(line, self.malformed, reason) for line, reason in batch.bad]
        if n == 0:
            report.reject(malformed)
            return
        col = batch.column
        ts = col("timestamp")
        if ts is None:
            seconds, time_code = np.full(n, np.nan), np.full(n, timestamps.MISSING, dtype=np.uint8)
        else:
            seconds, time_code = self.times.parse(ts)
        cols = checks.event_columns(col, n, time_code)
        code = checks.check_events(cols)
        ok = code < 0
        item = cols.item_id.values
        has_item = ok & item.is_valid().to_numpy(zero_copy_only=False)
        index = np.zeros(n, dtype=np.int64)
        if has_item.any():
            index[has_item] = self.items.resolve(item.filter(pa.array(has_item)))
            unknown = has_item & (index == 0)
            code[unknown] = checks.NOT_IN_CATALOGUE
            ok &= ~unknown
        bad = ~ok
        if bad.any() or malformed:
            report.reject_codes(batch.lines[bad], code[bad], self.reason, malformed)
        m = int(ok.sum())
        if m == 0:
            return
        self.writer.submit(self.columns(cols, ok, seconds[ok], index[ok]), m)

    @staticmethod
    def columns(cols: checks.EventColumns, ok: np.ndarray, seconds: np.ndarray, index: np.ndarray) -> dict:
        """The accepted rows as the store's columns (item_id: indexes, None for a search)."""
        keep = pa.array(ok)
        user = cols.user_id.values.filter(keep)
        etype = cols.type.values.filter(keep)
        query = checks.strip(cols.query.values.filter(keep))
        event_id = cols.event_id.values.filter(keep)
        if event_id.null_count:
            missing = event_id.is_null()
            keys = content_keys(user.filter(missing), cols.item_id.values.filter(keep).filter(missing),
                                etype.filter(missing), seconds[missing.to_numpy(zero_copy_only=False)],
                                query.filter(missing))
            if len(keys) == len(event_id):
                event_ids = keys
            else:
                it = iter(keys)
                event_ids = [e if e is not None else next(it) for e in event_id.to_pylist()]
        else:
            event_ids = event_id.to_pylist()
        n = len(index)
        return {
            "event_id": event_ids, "user_id": user.to_pylist(),
            "device_id": _fill(cols.device_id.values.filter(keep), DEFAULT_DEVICE, n),
            "type": etype.to_pylist(), "timestamp": seconds.tolist(),
            "item_id": pa.array(index, mask=index == 0).to_pylist() if (index == 0).any() else index.tolist(),
            "query": query.to_pylist() if query.null_count < n else [None] * n,
            "session_id": _fill(cols.session_id.values.filter(keep), "", n),
        }


def _fill(values: pa.Array, default: str, n: int) -> list[str]:
    if values.null_count == n:
        return [default] * n
    return pc.fill_null(values, default).to_pylist()


def write_events(store, columns: dict) -> int:
    """Write accepted events given column-wise; returns how many were new. A store with
    `import_event_columns` takes the columns as they are; others get Event objects."""
    fast = getattr(store, "import_event_columns", None)
    if fast is not None:
        return fast(**columns)
    return store.import_events(list(map(Event, columns["event_id"], columns["user_id"], columns["device_id"],
                                         columns["type"], columns["timestamp"], columns["item_id"],
                                         columns["query"], columns["session_id"])))


class _Writer:
    """Writes batches of events in a thread of its own, so the next batch is checked while the store
    writes this one (SQLite releases the GIL while it works). Counts into the report."""

    def __init__(self, store, report: ImportReport):
        self.store, self.report = store, report
        self.queue: queue.Queue = queue.Queue(1)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self.run, name="pocketrank-import-writer", daemon=True)
        self.thread.start()

    def run(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            if self.error is not None:
                continue  # drain: the importer stops at its next submit
            columns, m = item
            try:
                new = write_events(self.store, columns)
            except BaseException as exc:
                self.error = exc
                continue
            self.report.accepted += new
            self.report.duplicates += m - new

    def submit(self, columns: dict, m: int) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put((columns, m))

    def close(self, check: bool = True) -> None:
        """Wait for the writes queued; raise what went wrong in one (unless check=False)."""
        self.queue.put(None)
        self.thread.join()
        if check and self.error is not None:
            raise self.error


# --- parsed elsewhere, written here (a Ray task parses a file, the driver writes: server/data/import_files.py) ---


class _Collect:
    """An event import's writer that keeps the accepted rows instead of writing them."""

    def __init__(self) -> None:
        self.rows: list[tuple[dict, int]] = []

    def submit(self, columns: dict, m: int) -> None:
        self.rows.append((columns, m))


def parse_file(store, kind: str, source: str | Path, *, fmt: str | None = None,
               mapping: Mapping[str, str] | None = None, time_unit: str = "auto",
               batch_rows: int | None = None) -> Iterator[tuple[str, Any]]:
    """A file checked as import_events or import_catalogue check it, without writing: yields ("rows",
    (columns, n)) per batch of accepted events or ("items", [Item]) per batch of products, then ("report",
    ImportReport) with what was read and rejected. `store` is only read (events: product ids to indexes).
    write_parsed writes what it yields."""
    times = timestamps.TimeParser(time_unit)
    if kind == "events":
        mapping = _check_mapping(mapping, EVENT_COLUMNS, "events")
        src = _open(source, fmt, mapping, EVENT_COLUMNS,
                    ("event_id", "user_id", "device_id", "session_id", "item_id"), batch_rows or EVENT_BATCH_ROWS)
        report = ImportReport("events", _name(source), src.format, src.position)
        job = _EventImport(store, report, times, src.position)
        collect = job.writer = _Collect()  # type: ignore[assignment]
        required = ("user_id", "type", "timestamp") + (() if src.format == "jsonl" else ("item_id",))
        for _ in _steps(src, report, required, False, job.batch):
            while collect.rows:
                yield "rows", collect.rows.pop(0)
        report.time_unit = times.unit if times.unit in ("s", "ms") else None
        yield "report", report
        return
    mapping = _check_mapping(mapping, CATALOGUE_COLUMNS, "products")
    src = _open(source, fmt, mapping, CATALOGUE_COLUMNS, ("item_id",), batch_rows or CATALOGUE_BATCH_ROWS)
    report = ImportReport("catalogue", _name(source), src.format, src.position)
    cat = _CatalogueImport(store, report, times, src.position)
    parsed: list[list[Item]] = []
    for _ in _steps(src, report, ("item_id", "title", "category"), False, lambda b: parsed.append(cat.parse(b))):
        while parsed:
            items = parsed.pop(0)
            if items:
                yield "items", items
    report.time_unit = times.unit if times.unit in ("s", "ms") else None
    yield "report", report


def write_parsed(store, parts: Iterator[tuple[str, Any]]) -> ImportReport:
    """Write what parse_file yielded, in its order; the report is parse_file's with the writes counted."""
    written = ImportReport("", "", "")
    catalogue = _CatalogueImport(store, written, timestamps.TimeParser("auto"), "line")
    start = time.perf_counter()
    for what, value in parts:
        if what == "rows":
            columns, m = value
            new = write_events(store, columns)
            written.accepted += new
            written.duplicates += m - new
        elif what == "items":
            catalogue.write(value)
        else:
            report: ImportReport = value
            report.accepted += written.accepted
            report.updated += written.updated
            report.duplicates += written.duplicates
            report.seconds = max(report.seconds, time.perf_counter() - start)
            return report
    raise DataError("a parsed file ended without its report")


# --- catalogue ---


def import_catalogue(store, source: str | Path | pa.Table, *, fmt: str | None = None,
                     mapping: Mapping[str, str] | None = None, time_unit: str = "auto", progress: bool = True,
                     batch_rows: int = CATALOGUE_BATCH_ROWS) -> ImportReport:
    """Import (upsert) a product catalogue into `store`; see the module."""
    mapping = _check_mapping(mapping, CATALOGUE_COLUMNS, "products")
    src = _open(source, fmt, mapping, CATALOGUE_COLUMNS, ("item_id",), batch_rows)
    report = ImportReport("catalogue", _name(source), src.format, src.position)
    job = _CatalogueImport(store, report, timestamps.TimeParser(time_unit), src.position)
    _run(src, report, ("item_id", "title", "category"), progress, job.batch)
    report.time_unit = job.times.unit if job.times.unit in ("s", "ms") else None
    return report


_INT_TEXT = re.compile(r"[+-]?[0-9]+(?:\.0*)?")
_NUMBER_TEXT = re.compile(timestamps.NUMBER_RE.strip("^$"))
_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}


def _coerce(name: str, value: Any) -> Any:
    """A catalogue value as validate_item wants it, where the file could only spell it as text (CSV)
    or spelled it loosely; a value that cannot be read is passed on as it is, for validate_item to
    reject with its own message."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if name in ("year", "stock"):
            return int(float(text)) if _INT_TEXT.fullmatch(text) else value
        if name == "price":
            return float(text) if _NUMBER_TEXT.fullmatch(text) else value
        if name == "in_stock":
            low = text.lower()
            return True if low in _TRUE else False if low in _FALSE else value
        if name == "categories":
            return [p for p in value.split("|") if p.strip()]
        if name == "attributes":
            try:
                return json.loads(value)
            except ValueError:
                return value
        return value
    if name in ("year", "stock") and isinstance(value, float) and value.is_integer():
        return int(value)
    if name == "in_stock" and type(value) is int and value in (0, 1):
        return bool(value)
    if name == "attributes":
        if isinstance(value, list) and all(isinstance(kv, tuple) and len(kv) == 2 for kv in value):
            value = dict(value)  # an Arrow map
        if isinstance(value, dict):
            return {k: v for k, v in value.items() if v is not None}  # an Arrow struct has every field
    return value


class _CatalogueImport:
    def __init__(self, store, report: ImportReport, times: timestamps.TimeParser, position: str):
        self.store, self.report, self.times = store, report, times
        self.malformed = "line" if position == "line" else "row"

    def batch(self, batch: formats.Batch) -> None:
        items = self.parse(batch)
        if items:
            self.write(items)

    def parse(self, batch: formats.Batch) -> list[Item]:
        """The batch's valid products (the last of each id repeated in it), its bad rows counted."""
        n = batch.num_rows
        report = self.report
        report.rows_read += n + len(batch.bad)
        rejects = [(line, self.malformed, reason) for line, reason in batch.bad]
        columns = {}
        for name in CATALOGUE_COLUMNS:
            if name == "created_at":
                continue
            col = batch.column(name)
            if col is not None:
                values = col if isinstance(col, list) else col.to_pylist()
                columns[name] = [_coerce(name, v) for v in values]
        created = batch.column("created_at")
        seconds, time_code = self.times.parse(created) if created is not None else (None, None)
        items: dict[str, Item] = {}
        lines = batch.lines.tolist()
        for i in range(n):
            obj = {k: v[i] for k, v in columns.items() if v[i] is not None}
            try:
                item = validate_item(obj)
            except ValidationError as exc:
                rejects.append((lines[i], exc.field, exc.message))
                continue
            if time_code is not None and time_code[i] != timestamps.MISSING:
                if time_code[i] != timestamps.OK:
                    rejects.append((lines[i], "created_at", self.times.reason(int(time_code[i]))))
                    continue
                item = replace(item, created_at=float(cast(np.ndarray, seconds)[i]))  # parsed with time_code
            if item.sku in items:
                report.duplicates += 1  # repeated in the file: the last one wins
                del items[item.sku]  # (and keeps its place at the end)
            items[item.sku] = item
        rejects.sort(key=lambda r: r[0])
        report.reject(rejects)
        return list(items.values())

    def write(self, items: list[Item]) -> None:
        known = {}
        skus = [it.sku for it in items]
        for i in range(0, len(skus), 10_000):
            known.update(self.store.item_index(skus[i:i + 10_000]))
        stored = self.store.get_items(known.values()) if known else {}
        write, updated = [], 0
        for it in items:
            index = known.get(it.sku)
            if index is None:
                write.append(it)
                continue
            it = replace(it, item_id=index)
            if _same(stored.get(index), it):
                self.report.duplicates += 1
            else:
                write.append(it)
                updated += 1
        if write:
            self.store.put_items(write)
        self.report.accepted += len(write) - updated
        self.report.updated += updated


def _same(a: Item | None, b: Item) -> bool:
    if a is None:
        return False
    if a == b:
        return True
    # A store may hand back floats that went through float32 or text: compare those loosely.
    return (replace(a, price=b.price, created_at=b.created_at) == b and math.isclose(a.price, b.price, rel_tol=1e-6)
            and (a.created_at == b.created_at or (a.created_at is not None and b.created_at is not None
                                                  and math.isclose(a.created_at, b.created_at, abs_tol=1e-3))))
