"""Reading CSV, JSON Lines and Parquet files as a stream of Arrow batches, with bounded memory.

`open_source(path_or_table, ...)` gives a `Source` whose `batches()` yields `Batch`es of at most a
few hundred thousand rows; each knows the file position of every row (CSV and JSON Lines: the line
number, the CSV header being line 1; Parquet and in-memory tables: the row number, from 1), so a
problem can be named where the user can find it. Lines that cannot be parsed at all (a CSV line
with the wrong number of fields, a JSON line that is not a JSON object) are not fatal: they come
back in `Batch.bad` and the rest of the file is read.

A column mapping `{canonical name: file column}` renames file columns as they are read; file
columns nobody asked for are not decoded (CSV, Parquet) and are listed in `Source.ignored`.

CSV is cut into pieces at record boundaries here (quote-aware, so a quoted value may span lines)
and each piece parsed by pyarrow; JSON Lines likewise, each piece parsed by pyarrow.json and, when
a piece holds a malformed line or a column whose JSON type changes from line to line, the smallest
failing stretch is parsed line by line with the json module instead (`Batch.records`). Every CSV
column is read as text; typing is the importer's job (it has to name the row a bad value is in).
Files may be compressed (.gz, .bz2, .zst, .lz4 after the format's extension).
"""

from __future__ import annotations

import csv
import io
import json
import os
import queue
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.json as pjson
import pyarrow.parquet as pq

from pocketrank.shared.errors import DataError

FORMATS = ("csv", "jsonl", "parquet")
EXTENSIONS = {".csv": "csv", ".tsv": "csv", ".txt": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl",
              ".parquet": "parquet", ".pq": "parquet"}
COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd", ".lz4": "lz4"}
CHUNK_BYTES = 16 << 20
BATCH_ROWS = 200_000
_BOM = b"\xef\xbb\xbf"
_SURROGATE = re.compile("[\udc80-\udcff]")  # what decoding with surrogateescape makes of bytes that are not UTF-8
_SPLIT_MIN_LINES = 2048  # a failing JSON piece is halved down to this many lines, then read line by line


@dataclass
class Batch:
    """Consecutive rows of a file: either an Arrow table (columns renamed by the mapping) or, for JSON
    lines that needed the per-line parser, plain records (dicts, keys renamed likewise)."""

    lines: np.ndarray  # int64: the line (or row) number of each row
    table: pa.Table | None = None
    records: list[dict] | None = None
    bad: list[tuple[int, str]] = field(default_factory=list)  # (line, reason) of unparsable lines
    done: int = 0  # progress so far, in Source.progress_unit (bytes or rows)

    @property
    def num_rows(self) -> int:
        return len(self.lines)

    @property
    def first_line(self) -> int:
        return int(self.lines[0]) if len(self.lines) else (self.bad[0][0] if self.bad else 0)

    def columns(self) -> list[str]:
        if self.table is not None:
            return self.table.column_names
        return list(dict.fromkeys(k for r in self.records or () for k in r))

    def column(self, name: str) -> pa.ChunkedArray | list | None:
        """A column by canonical name (None if this batch has no such column)."""
        if self.table is not None:
            return self.table[name] if name in self.table.column_names else None
        records = self.records or []  # a batch holds either a table or records
        if not any(name in r for r in records):
            return None
        return [r.get(name) for r in records]


def detect_format(path: str | Path, fmt: str | None = None) -> tuple[str, str | None]:
    """(format, compression) from an explicit format or the file's extension."""
    name = Path(path).name.lower()
    compression = None
    for ext, codec in COMPRESSIONS.items():
        if name.endswith(ext):
            compression, name = codec, name[: -len(ext)]
    if fmt is not None:
        fmt = {"ndjson": "jsonl", "json": "jsonl", "tsv": "csv"}.get(fmt.lower(), fmt.lower())
        if fmt not in FORMATS:
            raise DataError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
        return fmt, compression
    found = EXTENSIONS.get(os.path.splitext(name)[1])
    if found is None:
        raise DataError(f"cannot tell the format of {Path(path).name} from its extension; "
                        f"pass the format ({', '.join(FORMATS)})")
    return found, compression


def rename(columns: Iterable[str], mapping: Mapping[str, str]) -> dict[str, str]:
    """{name after mapping: file column} for the given file columns."""
    columns = list(columns)
    out = {c: f for c, f in mapping.items() if f in columns}
    out.update((c, c) for c in columns if c not in mapping)
    return out


def _check_mapping(columns: Iterable[str], mapping: Mapping[str, str], where: str) -> None:
    columns = list(columns)
    for canonical, col in mapping.items():
        if col not in columns:
            shown = ", ".join(columns[:20]) + (", ..." if len(columns) > 20 else "")
            raise DataError(f"the mapping {canonical}={col} names a column {where} does not have "
                            f"(its columns: {shown or 'none'})")


class Source:
    """An opened input: `batches()` streams it; `columns` are the file's columns once known."""

    def __init__(self, source: str | Path | pa.Table, fmt: str | None = None, mapping: Mapping[str, str] | None = None,
                 wanted: Iterable[str] | None = None, text_columns: Iterable[str] = (),
                 batch_rows: int = BATCH_ROWS, chunk_bytes: int | None = None):
        self.mapping = dict(mapping or {})
        self.wanted = set(wanted) if wanted is not None else None  # canonical names worth decoding
        self.text_columns = set(text_columns)  # JSON: a float in these sends the piece to the line parser
        self.batch_rows = max(1, int(batch_rows))
        # CSV / JSON Lines are read in pieces of chunk_bytes; by default a first guess, then sized to hold
        # about batch_rows rows once the first piece shows how long a row is.
        self.chunk_bytes = int(chunk_bytes) if chunk_bytes else min(CHUNK_BYTES, max(1 << 16, 64 * self.batch_rows))
        self.columns: list[str] | None = None
        self.ignored: list[str] = []
        self._fitted = bool(chunk_bytes)  # an explicit piece size is kept
        if isinstance(source, pa.Table):
            self.name, self.format, self.compression, self.table = "<table>", "table", None, source
            self.position, self.progress_unit, self.total = "row", "rows", source.num_rows
            self._set_columns(source.column_names)
            return
        self.table = None
        self.path = Path(source)
        self.name = str(source)
        self.format, self.compression = detect_format(self.path, fmt)
        if not self.path.exists():
            raise DataError(f"{self.path} does not exist")
        if self.path.is_dir():
            raise DataError(f"{self.path} is a directory, not a file")
        if self.format == "parquet":
            try:
                self.parquet = pq.ParquetFile(self.path)
            except (pa.ArrowException, OSError) as exc:
                raise DataError(f"{self.path} is not a readable Parquet file ({exc})") from exc
            self.position, self.progress_unit = "row", "rows"
            self.total = self.parquet.metadata.num_rows
            self._set_columns(self.parquet.schema_arrow.names)
        else:
            self.position, self.progress_unit = "line", "bytes"
            self.total = self.path.stat().st_size
            if self.format == "csv":
                self._csv_header()

    # --- columns ---

    def _set_columns(self, columns: list[str]) -> None:
        _check_mapping(columns, self.mapping, "the file" if self.table is None else "the table")
        self.columns = list(columns)
        names = rename(columns, self.mapping)
        used = {f for c, f in names.items() if self.wanted is None or c in self.wanted}
        self.ignored = [c for c in columns if c not in used]
        self._read = [f for f in columns if f in used]  # file columns to decode

    def _rename_table(self, table: pa.Table) -> pa.Table:
        names = rename(table.column_names, self.mapping)
        if self.wanted is not None:
            names = {c: f for c, f in names.items() if c in self.wanted}
        return pa.table({c: table[f] for c, f in names.items()}) if names else pa.table({})

    def _rename_record(self, record: dict) -> dict:
        if not self.mapping:
            return record
        out = {c: record[f] for c, f in self.mapping.items() if f in record}
        out.update((k, v) for k, v in record.items() if k not in self.mapping)
        return out

    # --- reading ---

    def batches(self) -> Iterator[Batch]:
        if self.format == "table":
            return self._table_batches()
        if self.format == "parquet":
            return self._parquet_batches()
        if self.format == "csv":
            return self._csv_batches()
        return self._jsonl_batches()

    def _table_batches(self) -> Iterator[Batch]:
        table = self._rename_table(self.table.select(self._read))
        row = 1
        for rb in table.to_batches(max_chunksize=self.batch_rows):
            n = rb.num_rows
            yield Batch(np.arange(row, row + n, dtype=np.int64), pa.Table.from_batches([rb]), done=row + n - 1)
            row += n
        if self.table.num_rows == 0:
            yield Batch(np.zeros(0, np.int64), table)

    def _parquet_batches(self) -> Iterator[Batch]:
        row = 1
        try:
            for rb in self.parquet.iter_batches(batch_size=self.batch_rows, columns=self._read):
                n = rb.num_rows
                table = self._rename_table(pa.Table.from_batches([rb]))
                yield Batch(np.arange(row, row + n, dtype=np.int64), table, done=row + n - 1)
                row += n
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"{self.path}: Parquet data from row {row} cannot be read ({exc})") from exc

    def _open(self) -> tuple[Any, Callable[[], int]]:
        """A binary stream of the (decompressed) bytes, and how far into the file on disk it has read."""
        raw = open(self.path, "rb")
        if self.compression is None:
            return raw, raw.tell
        return pa.CompressedInputStream(raw, self.compression), raw.tell

    def _pieces(self, cut: Callable[[bytes], int]) -> Iterator[tuple[bytes, int, int]]:
        """(piece, its first line, bytes of the file read) with pieces ending at a record boundary.
        `cut(data)` says where the last complete record of `data` ends (0: none)."""
        stream, tell = self._open()
        with stream:
            carry, line, first = b"", 1, True
            while True:
                try:
                    chunk = stream.read(self.chunk_bytes)
                except (pa.ArrowException, OSError, EOFError) as exc:
                    raise DataError(f"{self.path} cannot be read after line {line} ({exc})") from exc
                data = carry + chunk if carry else chunk
                if first:
                    if len(data) < len(_BOM) and chunk:
                        carry = data
                        continue
                    data, first = (data[len(_BOM):] if data.startswith(_BOM) else data), False
                if not chunk:
                    if data:
                        yield data, line, tell()
                    return
                end = cut(data)
                if end <= 0:
                    carry = data
                    continue
                piece, carry = data[:end], data[end:]
                yield piece, line, tell()
                line += piece.count(b"\n")

    def _fit_chunk(self, size: int, rows: int) -> None:
        """After the first piece, read pieces of about batch_rows rows (the caller's memory bound)."""
        if not self._fitted and rows > 0:
            self._fitted = True
            self.chunk_bytes = min(4 * CHUNK_BYTES, max(1 << 16, int(size / rows * self.batch_rows)))

    # --- CSV ---

    def _csv_header(self) -> None:
        stream, _ = self._open()
        with stream:
            head = b""
            while True:
                chunk = stream.read(1 << 16)
                head += chunk
                end = _csv_cut(head, first_only=True)
                if end or not chunk:
                    break
        if head.startswith(_BOM):
            head, end = head[len(_BOM):], max(0, end - len(_BOM))
        line = head[:end] if end else head
        if not line.strip():
            raise DataError(f"{self.path} is empty; a CSV file starts with a header line naming its columns")
        try:
            text = line.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as exc:
            raise DataError(f"{self.path}: the header line is not UTF-8 text") from exc
        suffix = self.path.name.lower()
        self.delimiter = "\t" if ".tsv" in suffix else (
            "," if "," in text else ";" if ";" in text else "\t" if "\t" in text else ",")
        names = next(csv.reader([text], delimiter=self.delimiter))
        names = [n.strip() for n in names]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise DataError(f"{self.path}: the header names a column twice ({', '.join(dupes)})")
        self.header_bytes = len(line)
        self._set_columns(names)

    def _csv_batches(self) -> Iterator[Batch]:
        names = self.columns
        assert names is not None  # a CSV source's columns are set from its header when it is opened
        skip_header = True
        for piece, line, done in self._pieces(_csv_cut):
            if skip_header:  # the header is the first record of the first piece
                header = piece[:self.header_bytes]
                piece, line, skip_header = piece[self.header_bytes:], line + header.count(b"\n"), False
            if piece:
                batch = self._csv_piece(piece, line, names, done)
                self._fit_chunk(len(piece), batch.num_rows + len(batch.bad))
                yield batch

    def _csv_piece(self, piece: bytes, line: int, names: list[str], done: int) -> Batch:
        invalid: list[tuple[int, str]] = []

        def handler(row) -> str:
            invalid.append((row.number, row.text))
            return "skip"

        try:
            table = pcsv.read_csv(
                pa.py_buffer(piece),
                read_options=pcsv.ReadOptions(column_names=names, use_threads=False,
                                              block_size=max(1 << 20, len(piece) + 1)),
                parse_options=pcsv.ParseOptions(delimiter=self.delimiter, newlines_in_values=True,
                                                ignore_empty_lines=True, invalid_row_handler=handler),
                convert_options=pcsv.ConvertOptions(column_types={n: pa.string() for n in self._read},
                                                    include_columns=self._read, strings_can_be_null=True,
                                                    null_values=[""], quoted_strings_can_be_null=True))
        except pa.ArrowInvalid:
            return self._csv_lines(piece, line, names, done)  # bad UTF-8, an unterminated quote: line by line
        starts = _record_lines(piece, line)
        # A stray quote inside a value makes pyarrow see other records than the quote-aware line count.
        if len(starts) != table.num_rows + len(invalid) or any(number is None for number, _ in invalid):
            return self._csv_lines(piece, line, names, done)
        bad = []
        keep = np.ones(len(starts), dtype=bool)
        for number, text in invalid:
            keep[number - 1] = False
            got = len(next(csv.reader([text], delimiter=self.delimiter), []))
            bad.append((int(starts[number - 1]), f"has {got} fields where the header has {len(names)}"))
        return Batch(starts[keep], self._rename_table(table), bad=bad, done=done)

    def _csv_lines(self, piece: bytes, line: int, names: list[str], done: int) -> Batch:
        """The slow path for a piece pyarrow refuses (bad UTF-8, an unterminated quote) or reads
        differently from the quote-aware line count (a stray quote inside a value): Python's csv module,
        which tracks physical lines."""
        cols: dict[str, list] = {n: [] for n in self._read}
        index = [names.index(n) for n in self._read]
        lines, bad = [], []
        reader = csv.reader(io.StringIO(piece.decode("utf-8", errors="surrogateescape"), newline=""),
                            delimiter=self.delimiter)
        prev = 0
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                bad.append((line + prev, f"cannot be parsed as CSV ({exc})"))
                prev = reader.line_num
                continue
            start, prev = line + prev, reader.line_num
            if not fields:
                continue  # a blank line
            if len(fields) != len(names):
                bad.append((start, f"has {len(fields)} fields where the header has {len(names)}"))
            elif any(_SURROGATE.search(f) for f in fields):
                bad.append((start, "is not valid UTF-8 text"))
            else:
                for n, i in zip(self._read, index):
                    cols[n].append(fields[i] or None)
                lines.append(start)
        table = pa.table({n: pa.array(v, pa.string()) for n, v in cols.items()})
        return Batch(np.array(lines, dtype=np.int64), self._rename_table(table), bad=bad, done=done)

    # --- JSON Lines ---

    def _jsonl_batches(self) -> Iterator[Batch]:
        seen: set[str] = set()
        for piece, line, done in self._pieces(lambda data: data.rfind(b"\n") + 1):
            self._fit_chunk(len(piece), piece.count(b"\n"))
            for batch in self._json_piece(piece, line):
                batch.done = done
                columns = batch.columns()
                if self.columns is None and batch.num_rows:
                    self._set_columns(columns)  # checks the mapping against the first lines' keys
                    seen.update(columns)
                elif self.columns is not None and not seen.issuperset(columns):
                    fresh = [c for c in columns if c not in seen]
                    seen.update(fresh)
                    self.columns += fresh
                    names = rename(fresh, {})
                    self.ignored += [c for c in names if c not in self.mapping.values()
                                     and self.wanted is not None and c not in self.wanted]
                if batch.table is not None:
                    batch.table = self._rename_table(batch.table)
                elif batch.records and self.mapping:
                    batch.records = [self._rename_record(r) for r in batch.records]
                yield batch

    def _json_piece(self, piece: bytes, line: int) -> Iterator[Batch]:
        try:
            table = pjson.read_json(pa.py_buffer(piece), read_options=pjson.ReadOptions(use_threads=True),
                                    parse_options=pjson.ParseOptions(newlines_in_values=False))
        except pa.ArrowInvalid:
            table = None
        if table is not None and not any(pa.types.is_floating(table[c].type) and table[c].null_count < len(table)
                                         for c in self._json_text_columns(table.column_names)):
            starts = _json_lines(piece, line, table.num_rows)
            if starts is not None:
                yield Batch(starts, table)
                return
        n_lines = piece.count(b"\n")
        if n_lines > _SPLIT_MIN_LINES:  # halve it: only the stretch around a bad line goes slowly
            mid = piece.find(b"\n", len(piece) // 2) + 1
            if 0 < mid < len(piece):
                yield from self._json_piece(piece[:mid], line)
                yield from self._json_piece(piece[mid:], line + piece.count(b"\n", 0, mid))
                return
        yield self._json_lines(piece, line)

    def _json_text_columns(self, columns: list[str]) -> list[str]:
        names = rename(columns, self.mapping)
        return [f for c, f in names.items() if c in self.text_columns]

    def _json_lines(self, piece: bytes, line: int) -> Batch:
        records, lines, bad = [], [], []
        for k, raw in enumerate(piece.split(b"\n")):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                bad.append((line + k, "is not valid UTF-8 text"))
                continue
            except ValueError as exc:
                reason = f"{exc.msg} at column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else str(exc)
                bad.append((line + k, f"is not valid JSON ({reason})"))
                continue
            if not isinstance(obj, dict):
                bad.append((line + k, f"must be a JSON object, not {type(obj).__name__}"))
                continue
            if b"\\u" in raw and not _utf8_encodable(obj):
                bad.append((line + k, "holds a lone UTF-16 surrogate (\\ud800-\\udfff), which is not text"))
                continue
            records.append(obj)
            lines.append(line + k)
        return Batch(np.array(lines, dtype=np.int64), records=records, bad=bad)


def _utf8_encodable(obj: Any) -> bool:
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _csv_cut(data: bytes, first_only: bool = False) -> int:
    """Where the last (or first) complete CSV record of `data` ends: just after a newline outside quotes."""
    if b'"' not in data:
        end = data.find(b"\n") if first_only else data.rfind(b"\n")
        return end + 1
    arr = np.frombuffer(data, dtype=np.uint8)
    quotes = np.flatnonzero(arr == 34)
    newlines = np.flatnonzero(arr == 10)
    ends = newlines[np.searchsorted(quotes, newlines) % 2 == 0]  # an even number of quotes before it
    if len(ends) == 0:
        # No newline outside quotes: a stray quote, or a record longer than what was read. Wait for more,
        # but not forever: past 64 MiB cut at the last newline and let the parser judge.
        return int(newlines[-1]) + 1 if len(data) > (64 << 20) and len(newlines) else 0
    return int(ends[0] if first_only else ends[-1]) + 1


def _record_lines(piece: bytes, line: int) -> np.ndarray:
    """The line each non-blank CSV record of `piece` starts on (quote-aware; pyarrow skips blank lines)."""
    quoted = b'"' in piece
    blank = piece.startswith((b"\n", b"\r\n")) or b"\n\n" in piece or b"\n\r\n" in piece
    n_newlines = piece.count(b"\n")
    if not quoted and not blank:
        n = n_newlines + (0 if piece.endswith(b"\n") else 1)
        return np.arange(line, line + n, dtype=np.int64)
    arr = np.frombuffer(piece, dtype=np.uint8)
    newlines = np.flatnonzero(arr == 10)
    ends = newlines
    if quoted:
        ends = newlines[np.searchsorted(np.flatnonzero(arr == 34), newlines) % 2 == 0]
    starts = np.concatenate([[0], ends + 1])
    stops = np.concatenate([ends, [len(piece)]])
    if starts[-1] >= len(piece):
        starts, stops = starts[:-1], stops[:-1]
    length = stops - starts
    first_byte = arr[np.minimum(starts, len(arr) - 1)]
    nonblank = (length > 0) & ~((length == 1) & (first_byte == 13))
    return (line + np.searchsorted(newlines, starts[nonblank])).astype(np.int64)


def _json_lines(piece: bytes, line: int, rows: int) -> np.ndarray | None:
    """The line of each of the `rows` JSON values pyarrow read from `piece` (it skips blank lines),
    or None if that cannot be told."""
    n = piece.count(b"\n") + (0 if piece.endswith(b"\n") else 1)
    if n == rows:
        return np.arange(line, line + n, dtype=np.int64)
    arr = np.frombuffer(piece, dtype=np.uint8)
    newlines = np.flatnonzero(arr == 10)
    content = np.flatnonzero(~np.isin(arr, np.array([9, 10, 13, 32], dtype=np.uint8)))
    nonblank = np.unique(np.searchsorted(newlines, content))
    if len(nonblank) != rows:
        return None
    return (line + nonblank).astype(np.int64)


def open_source(source: str | Path | pa.Table, fmt: str | None = None, mapping: Mapping[str, str] | None = None,
                **kwargs: Any) -> Source:
    """Open a file (format from `fmt` or its extension) or wrap an Arrow table; see Source."""
    return Source(source, fmt, mapping, **kwargs)


def prefetch(batches: Iterable[Batch], depth: int = 2) -> Iterator[Batch]:
    """Read (parse) the next batches in a thread while the caller works on the current one: pyarrow
    parses with the GIL released, so reading and writing the store overlap on two cores."""
    q: queue.Queue = queue.Queue(depth)
    stop = threading.Event()

    def put(item: tuple) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for batch in batches:
                if not put(("batch", batch)):
                    return
            put(("end", None))
        except BaseException as exc:  # handed to the consumer, which raises it
            put(("error", exc))

    thread = threading.Thread(target=run, name="pocketrank-import-reader", daemon=True)
    thread.start()
    try:
        while True:
            kind, item = q.get()
            if kind == "end":
                return
            if kind == "error":
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)
