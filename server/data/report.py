"""What an import did: rows read, written, already there, rejected (and why, and where)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

import numpy as np

MAX_BAD_ROWS = 10  # bad rows kept in the report, the first ones in file order


@dataclass(frozen=True)
class BadRow:
    line: int  # line number (CSV: the header is line 1; JSON Lines) or row number (Parquet, tables), from 1
    field: str  # the field at fault, or "line" for a line that could not be parsed at all
    reason: str


@dataclass
class ImportReport:
    kind: str  # "events" or "catalogue"
    source: str
    format: str
    position: str = "line"  # what BadRow.line counts: "line" or "row"
    rows_read: int = 0
    accepted: int = 0  # new rows written
    updated: int = 0  # catalogue: products already present whose data changed (rewritten)
    duplicates: int = 0  # already present (or repeated in the file) and unchanged: nothing written
    rejected: int = 0
    rejected_by_field: dict[str, int] = field(default_factory=dict)
    bad_rows: list[BadRow] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)
    time_unit: str | None = None  # how numeric timestamps were read: "s" or "ms" (None: there were none)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Not every row was rejected: something was written, or was already there."""
        return self.accepted + self.updated + self.duplicates > 0 or self.rejected == 0

    def reject(self, rows: Iterable[tuple[int, str, str]]) -> None:
        """Count rejected rows given as (line, field, reason)."""
        rows = list(rows)
        self._count(f for _, f, _ in rows)
        self._keep(rows)

    def reject_codes(self, lines: np.ndarray, codes: np.ndarray, reason: Callable[[int], tuple[str, str]],
                     extra: Iterable[tuple[int, str, str]] = ()) -> None:
        """Count rejected rows given column-wise, by their lines and codes (`reason(code)` is (field,
        message)), with `extra` rejected rows of the same stretch of the file (lines that did not parse)."""
        extra = list(extra)
        values, counts = np.unique(np.asarray(codes), return_counts=True)
        for c, count in zip(values.tolist(), counts.tolist()):
            self._count([reason(c)[0]], count)
        self._count(f for _, f, _ in extra)
        if len(self.bad_rows) < MAX_BAD_ROWS:
            first = np.argsort(lines, kind="stable")[:MAX_BAD_ROWS - len(self.bad_rows)]
            self._keep([(int(lines[i]), *reason(int(codes[i]))) for i in first] + extra)

    def _count(self, fields: Iterable[str], each: int = 1) -> None:
        for f in fields:
            self.rejected_by_field[f] = self.rejected_by_field.get(f, 0) + each
            self.rejected += each

    def _keep(self, rows: list[tuple[int, str, str]]) -> None:
        room = MAX_BAD_ROWS - len(self.bad_rows)
        if room > 0 and rows:
            self.bad_rows += [BadRow(*r) for r in sorted(rows, key=lambda r: r[0])[:room]]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ok"] = self.ok
        d["seconds"] = round(self.seconds, 3)
        return d

    def summary(self) -> str:
        """A few lines for a person."""
        rate = f" ({self.rows_read / self.seconds:,.0f}/s)" if self.seconds >= 1 and self.rows_read else ""
        what = "rows" if self.position == "row" else "lines"
        out = [f"{self.kind} from {self.source} ({self.format}): {self.rows_read:,} rows read in "
               f"{self.seconds:.1f} s{rate}"]
        out.append(f"  accepted (new):  {self.accepted:,}")
        if self.kind == "catalogue":
            out.append(f"  updated:         {self.updated:,}  (already present, data changed)")
        out.append(f"  duplicates:      {self.duplicates:,}  (already present or repeated; nothing written)")
        out.append(f"  rejected:        {self.rejected:,}")
        if self.rejected_by_field:
            out.append("    by field: " + ", ".join(f"{f} {n:,}" for f, n in
                                               sorted(self.rejected_by_field.items(), key=lambda kv: -kv[1])))
        if self.bad_rows:
            out.append(f"  first rejected {what}:")
            out += [f"    {self.position} {b.line}: {b.field}: {b.reason}" for b in self.bad_rows]
        if self.ignored_columns:
            out.append("  ignored columns: " + ", ".join(self.ignored_columns))
        if self.time_unit:
            out.append(f"  numeric timestamps read as epoch {'seconds' if self.time_unit == 's' else 'milliseconds'}")
        if not self.ok:
            out.append(f"nothing was imported: every {self.position} was rejected")
        elif self.accepted + self.updated == 0 and self.duplicates:
            valid = "valid " if self.rejected else ""
            out.append(f"nothing new: every {valid}{self.position} was already imported")
        return "\n".join(out)

    __str__ = summary
