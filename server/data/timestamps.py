"""Timestamp columns of imported files as float64 unix seconds, parsed column-wise.

Accepted, per row:

- ISO-8601 text in the extended format: ``2024-03-01``, ``2024-03-01T10:00``, ``2024-03-01 10:00:00``,
  ``2024-03-01T10:00:00.123456``, each optionally followed by a zone (``Z``, ``+02``, ``+0200``,
  ``+02:00``; only after a time). The zone is honoured; **a time without a zone is UTC**.
- a number (a numeric column, or text such as ``"1709287200"``): epoch seconds or epoch milliseconds.
  With ``unit="auto"`` the unit is decided once per import, from the first batch that holds numbers:
  milliseconds if the median of their magnitudes is at least 1e11 (as seconds that is the year 5138,
  as milliseconds March 1973), seconds otherwise. A stray value in the other unit is then rejected
  rather than misread: milliseconds read as seconds fall after 2100, and a column found to be in
  milliseconds rejects values below 1e11 (seconds, or times before 1973-03-03). ``unit="s"`` or
  ``"ms"`` fixes the unit (and reads every number in it); ``unit="iso"`` accepts ISO text only (so
  ``20240301`` is not read as a number of seconds).
- Parquet/Arrow ``timestamp`` columns (a naive one is UTC) and ``date`` columns.

Anything before 1970-01-01 or after 2100-01-01 (pocketrank.shared.schemas.MAX_TIMESTAMP) is rejected, like
pocketrank.shared.schemas does for events on the wire.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pocketrank.shared.schemas import MAX_TIMESTAMP

UNITS = ("auto", "s", "ms", "iso")

# Per-row outcome codes, alongside the seconds.
OK, MISSING, UNPARSABLE, OUT_OF_RANGE = 0, 1, 2, 3

MS_THRESHOLD = 1e11
NUMBER_RE = r"^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$"
ISO_RE = (r"^(?P<y>[0-9]{4})-(?P<m>[0-9]{2})-(?P<d>[0-9]{2})"
          r"(?:[Tt ](?P<H>[0-9]{2}):(?P<M>[0-9]{2})(?::(?P<S>[0-9]{2})(?:[.,](?P<f>[0-9]{1,9}))?)?"
          r"(?P<z>[Zz]|[+-][0-9]{2}(?::?[0-9]{2})?)?)?$")
_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)


def days_from_civil(y: np.ndarray, m: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 of proleptic Gregorian dates (H. Hinnant's algorithm), element-wise."""
    y = y - (m <= 2)
    era = np.floor_divide(y, 400)
    yoe = y - era * 400
    doy = (153 * (m + np.where(m > 2, -3, 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _ints(parts: pa.StructArray, name: str, default: int = 0) -> np.ndarray:
    col = parts.field(name)
    col = pc.if_else(pc.equal(col, ""), None, col)
    return pc.fill_null(pc.cast(col, pa.int64()), default).to_numpy(zero_copy_only=False)


def parse_iso(text: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(seconds, ok) of ISO-8601 strings; ok is False where a row is not one (or not a real date)."""
    n = len(text)
    parts = pc.extract_regex(text, ISO_RE)
    ok = pc.fill_null(pc.is_valid(parts), False).to_numpy(zero_copy_only=False)
    out = np.full(n, np.nan)
    if not ok.any():
        return out, ok
    parts = parts.filter(pa.array(ok))
    y, m, d = _ints(parts, "y"), _ints(parts, "m"), _ints(parts, "d")
    hh, mm, ss = _ints(parts, "H"), _ints(parts, "M"), _ints(parts, "S")
    frac_text = parts.field("f")
    frac = pc.fill_null(pc.cast(pc.if_else(pc.equal(frac_text, ""), None,
                                           pc.binary_join_element_wise("0.", frac_text, "")), pa.float64()),
                        0.0).to_numpy(zero_copy_only=False)
    zone = parts.field("z")
    zone_digits = pc.replace_substring(pc.utf8_slice_codeunits(zone, 1), ":", "")
    zh = pc.fill_null(pc.cast(pc.if_else(pc.greater_equal(pc.utf8_length(zone_digits), 2),
                                         pc.utf8_slice_codeunits(zone_digits, 0, 2), None), pa.int64()), 0)
    zm = pc.fill_null(pc.cast(pc.if_else(pc.equal(pc.utf8_length(zone_digits), 4),
                                         pc.utf8_slice_codeunits(zone_digits, 2, 4), None), pa.int64()), 0)
    zh, zm = zh.to_numpy(zero_copy_only=False), zm.to_numpy(zero_copy_only=False)
    sign = np.where(pc.starts_with(zone, "-").to_numpy(zero_copy_only=False), -1, 1)
    leap = ((y % 4 == 0) & (y % 100 != 0)) | (y % 400 == 0)
    month_ok = (m >= 1) & (m <= 12)
    dim = _DAYS_IN_MONTH[np.clip(m, 0, 12)] + ((m == 2) & leap)
    valid = month_ok & (d >= 1) & (d <= dim) & (hh <= 23) & (mm <= 59) & (ss <= 59) & (zh <= 23) & (zm <= 59)
    whole = days_from_civil(y, m, d) * 86400 + hh * 3600 + mm * 60 + ss - sign * (zh * 3600 + zm * 60)
    seconds = whole.astype(np.float64) + frac  # as _arrow_iso computes it, to the last bit
    idx = np.flatnonzero(ok)
    out[idx] = np.where(valid, seconds, np.nan)
    ok[idx] = valid
    return out, ok


def _arrow_iso(text: pa.Array) -> np.ndarray | None:
    """Seconds of ISO-8601 strings by Arrow's own parser, when every one matches ISO_RE and all have a
    zone or none has (a few ms per million rows); None when it cannot tell them all (then parse_iso)."""
    if text.null_count or not pc.all(pc.match_substring_regex(text, ISO_RE)).as_py():
        return None
    for target in (pa.timestamp("ns", tz="UTC"), pa.timestamp("ns")):  # zoned, or naive (= UTC)
        try:
            ns = pc.cast(text, target).cast(pa.int64()).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
        whole, frac = np.divmod(ns, 1_000_000_000)
        return whole.astype(np.float64) + frac / 1e9
    return None


def parse_numbers(text: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(values, ok) of decimal number strings (surrounding spaces allowed); NaN where not one."""
    text = pc.utf8_trim_whitespace(text)
    if text.null_count == 0 and pc.all(pc.match_substring_regex(text, r"^[0-9]{1,15}$")).as_py():
        return text.cast(pa.float64()).to_numpy(zero_copy_only=False), np.ones(len(text), dtype=bool)  # integers
    ok = pc.fill_null(pc.match_substring_regex(text, NUMBER_RE), False)
    values = pc.cast(pc.if_else(ok, text, None), pa.float64())
    return pc.fill_null(values, np.nan).to_numpy(zero_copy_only=False), ok.to_numpy(zero_copy_only=False)


class TimeParser:
    """Parses one import's timestamp column batch by batch, keeping the unit once it is decided."""

    def __init__(self, unit: str = "auto"):
        if unit not in UNITS:
            raise ValueError(f"time unit must be one of {', '.join(UNITS)}, not {unit!r}")
        self.requested = unit
        self.unit = None if unit == "auto" else unit  # the unit numbers are read in, once known

    def _numbers(self, values: np.ndarray) -> np.ndarray:
        """Seconds of numbers in the import's unit (NaN for a number that cannot be in it)."""
        finite = values[np.isfinite(values)]
        if self.unit is None and len(finite):
            self.unit = "ms" if np.median(np.abs(finite)) >= MS_THRESHOLD else "s"
        if self.unit != "ms":
            return values
        seconds = values / 1000.0
        if self.requested == "auto":
            with np.errstate(invalid="ignore"):
                seconds[np.abs(values) < MS_THRESHOLD] = np.nan  # seconds among milliseconds: out of range
        return seconds

    def parse(self, column: pa.Array | pa.ChunkedArray | Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        """(seconds as float64, per-row code: OK, MISSING, UNPARSABLE or OUT_OF_RANGE)."""
        if not isinstance(column, (pa.Array, pa.ChunkedArray)):
            return self.parse_values(column)
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
        n = len(column)
        seconds = np.full(n, np.nan)
        code = np.full(n, UNPARSABLE, dtype=np.uint8)
        missing = column.is_null().to_numpy(zero_copy_only=False) if column.null_count else np.zeros(n, bool)
        t = column.type
        if pa.types.is_dictionary(t):
            return self.parse(column.dictionary_decode())
        if pa.types.is_large_string(t) or pa.types.is_string_view(t):
            column, t = column.cast(pa.string()), pa.string()
        if pa.types.is_string(t):
            text = pc.utf8_trim_whitespace(column)
            rest = ~missing  # rows still to read
            if self.unit != "iso":
                num, is_num = parse_numbers(text)
                if is_num.any():
                    seconds[is_num] = self._numbers(num[is_num])
                    code[is_num] = OK
                    rest &= ~is_num
            if rest.any():  # the rest may be ISO-8601
                where = np.flatnonzero(rest)
                sub = text.take(pa.array(where)) if len(where) < n else text
                fast = _arrow_iso(sub)
                if fast is not None:
                    seconds[where], code[where] = fast, OK
                else:
                    iso, is_iso = parse_iso(sub)
                    seconds[where[is_iso]] = iso[is_iso]
                    code[where[is_iso]] = OK
        elif (pa.types.is_integer(t) or pa.types.is_floating(t)) and self.unit != "iso":
            values = pc.fill_null(column.cast(pa.float64()), np.nan).to_numpy(zero_copy_only=False)
            seconds = self._numbers(values)
            code[:] = OK
        elif pa.types.is_timestamp(t):
            per_second = {"s": 1, "ms": 1e3, "us": 1e6, "ns": 1e9}[t.unit]
            values = column.cast(pa.int64()).to_numpy(zero_copy_only=False).astype(np.float64)
            seconds = values / per_second
            code[:] = OK
        elif pa.types.is_date(t):
            seconds = column.cast(pa.date32()).cast(pa.int32()).to_numpy(zero_copy_only=False) * 86400.0
            code[:] = OK
        code[missing] = MISSING
        self._range(seconds, code)
        return seconds, code

    def parse_values(self, values: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        """The same for Python values (rows that came through a per-line parser): str is parsed as text,
        int and float as numbers, None is missing, anything else (a bool, a list) is unparsable."""
        n = len(values)
        seconds = np.full(n, np.nan)
        code = np.full(n, UNPARSABLE, dtype=np.uint8)
        texts = [i for i, v in enumerate(values) if isinstance(v, str)]
        nums = [i for i, v in enumerate(values) if type(v) in (int, float)]
        code[[i for i, v in enumerate(values) if v is None]] = MISSING
        if texts:
            s, c = self.parse(pa.array([values[i] for i in texts], pa.string()))
            seconds[texts], code[texts] = s, c
        if nums and self.unit != "iso":
            # Beyond +-1e18 no unit brings a number into range; float() of a huge int would overflow.
            raw = np.array([float(values[i]) if abs(values[i]) < 1e18 else np.inf for i in nums])
            seconds[nums] = self._numbers(raw)
            code[nums] = OK
        self._range(seconds, code)
        return seconds, code

    @staticmethod
    def _range(seconds: np.ndarray, code: np.ndarray) -> None:
        with np.errstate(invalid="ignore"):
            bad = (code == OK) & ~((seconds >= 0) & (seconds <= MAX_TIMESTAMP))
        code[bad] = OUT_OF_RANGE

    def reason(self, code: int) -> str:
        """The rejection message for a code."""
        if code == MISSING:
            return "is required"
        if code == UNPARSABLE:
            if self.requested == "iso":
                return "must be an ISO-8601 time such as 2024-03-01T10:00:00+02:00 (--time-unit iso)"
            return "must be an ISO-8601 time (2024-03-01T10:00:00+02:00) or a number of epoch seconds or milliseconds"
        unit = {"s": "seconds", "ms": "milliseconds"}.get(self.unit or "")
        return f"must be between 1970 and 2100 (read as epoch {unit}; --time-unit sets the unit)" if unit \
            else "must be between 1970 and 2100"
