"""Users' attributes (age band, region, plan...): what cold-start segments are built from.

    pocketrank import users users.csv --map user_id=customer_id

A file with a `user_id` column and one column per attribute (at most MAX_ATTRIBUTES; every other
column is an attribute). Values are read as text and must be 1-64 characters of A-Z a-z 0-9 _ . : + -
(they become segment keys and request parameters); an empty value means "unknown" and is left out.
A row with a bad user id or a bad value is rejected whole and named by its line; importing again
replaces a user's attributes with the file's.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

import pyarrow as pa

from pocketrank.shared.errors import DataError, ValidationError
from pocketrank.shared.schemas import check_id

from ..online.segments import VALUE_RE
from .formats import open_source
from .report import ImportReport

MAX_ATTRIBUTES = 16


def import_profiles(store, source: str | Path | pa.Table, *, fmt: str | None = None,
                    mapping: Mapping[str, str] | None = None) -> ImportReport:
    src = open_source(source, fmt, mapping)
    report = ImportReport("users", str(source) if not isinstance(source, pa.Table) else "<table>", src.format,
                          src.position)
    start = time.perf_counter()
    renamed = set((mapping or {}).values()) - set(mapping or {})  # a mapped column is not also an attribute
    for batch in src.batches():
        report.rows_read += len(batch.lines) + len(batch.bad)
        report.reject((line, "line", reason) for line, reason in batch.bad)
        rows = batch.table.to_pylist() if batch.table is not None else batch.records or []
        good: dict[str, dict[str, str]] = {}
        bad = []
        for line, row in zip(batch.lines.tolist(), rows):
            if "user_id" not in row:
                raise DataError(f"{source} has no user_id column (map yours with --map user_id=COLUMN)")
            attrs = {k: str(v).strip() for k, v in row.items()
                     if k != "user_id" and k not in renamed and v not in (None, "")}
            try:
                user = check_id("user_id", row["user_id"])
                if len(attrs) > MAX_ATTRIBUTES:
                    raise ValidationError("attributes", f"at most {MAX_ATTRIBUTES} per user")
                for k, v in attrs.items():
                    if not VALUE_RE.match(v):
                        raise ValidationError(k, "must be 1-64 characters of A-Z a-z 0-9 _ . : + -")
            except ValidationError as exc:
                bad.append((line, exc.field, exc.message))
                continue
            good[user] = attrs
        report.reject(bad)
        if good:
            store.put_profiles(good)
            report.accepted += len(good)
    report.seconds = time.perf_counter() - start
    return report
