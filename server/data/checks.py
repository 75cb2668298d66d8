"""pocketrank.shared.schemas.validate_event's decisions, column-wise, for the importer.

`event_text(column, ...)` turns a column as read (an Arrow array of any type, or Python values from
the per-line JSON parser) into a `Text`: the values as strings where a string can be made of them
the way pocketrank.shared.schemas does (a str as is, an int as its digits, a product id int only in
1..MAX_ITEM_ID) and a code where one cannot (a float, a bool, an object...). `check_events` then
gives each row the code of the first check it fails, in validate_event's order, so a row is rejected
exactly when validate_event would reject it, and for the same field with the same message
(tests/server/data/test_importers.py compares the two on tricky rows).

The importer's own rules come first: a missing device_id is "import", a missing event_id gets the
content key, a missing session_id is "", and the timestamp has been parsed by pocketrank.server.data.timestamps
(whose per-row code is passed in) before the checks run.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pocketrank.shared.schemas import EVENT_TYPES, MAX_ITEM_ID, MAX_ITEM_ID_BYTES, MAX_QUERY_LEN

from . import timestamps

# Python's whitespace (str.isspace, re's \s, str.strip()), which RE2's \s is not: spelled out.
WHITESPACE = "".join(chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace())
_WS_CLASS = "".join(f"\\x{{{ord(c):x}}}" for c in WHITESPACE)
ID_PATTERN = r"^[A-Za-z0-9_.:\-]+$"  # pocketrank.shared.schemas.ID_RE, the length checked apart
# pocketrank.shared.schemas.ITEM_ID_RE: no control characters, no whitespace at either end; length apart.
ITEM_ID_PATTERN = (rf"^[^\x00-\x1f\x7f{_WS_CLASS}](?:[^\x00-\x1f\x7f]*[^\x00-\x1f\x7f{_WS_CLASS}])?$")
NOT_ONLY_SPACE = rf"[^{_WS_CLASS}]"

# What a value's type allows (Text.bad).
FINE, WRONG_TYPE, OUT_OF_RANGE = 0, 1, 2

# Rejection codes: (field, message). The messages are pocketrank.shared.schemas' own.
_ID_TEXT = "must be 1-64 characters of A-Z a-z 0-9 _ . : -"
REASONS: list[tuple[str, str]] = [
    ("type", f"must be one of {', '.join(EVENT_TYPES)}"),
    ("query", "is required for a search event"),
    ("query", f"must be at most {MAX_QUERY_LEN} characters"),
    ("query", "is only allowed on search events"),
    ("item_id", "must be a string (the product's own id)"),
    ("item_id", f"as an integer must be between 1 and {MAX_ITEM_ID}"),
    ("item_id", "must be 1-64 printable characters, without leading or trailing spaces"),
    *[("item_id", f"is required for a {t} event") for t in EVENT_TYPES],
    ("timestamp", "is required"),
    *[(f, m) for f in ("event_id", "user_id", "device_id") for m in ("is required", "must be a string", _ID_TEXT)],
    ("timestamp", "unparsable"),  # the message comes from the TimeParser
    ("timestamp", "out of range"),
    *[("session_id", m) for m in ("must be a string", _ID_TEXT)],
    ("item_id", "is not in the catalogue; import the catalogue first"),
]
CODE = {(f, m): i for i, (f, m) in enumerate(REASONS)}
TYPE_BAD = CODE["type", REASONS[0][1]]
QUERY_REQUIRED, QUERY_LONG, QUERY_NOT_ALLOWED = 1, 2, 3
ITEM_TYPE, ITEM_RANGE, ITEM_TEXT = 4, 5, 6
ITEM_REQUIRED = {t: 7 + i for i, t in enumerate(EVENT_TYPES)}
TS_MISSING = CODE["timestamp", "is required"]
TS_UNPARSABLE = CODE["timestamp", "unparsable"]
TS_RANGE = CODE["timestamp", "out of range"]
NOT_IN_CATALOGUE = CODE["item_id", "is not in the catalogue; import the catalogue first"]


def _id_codes(field: str) -> tuple[int, int, int]:
    if field == "session_id":
        return -1, CODE[field, "must be a string"], CODE[field, _ID_TEXT]
    return CODE[field, "is required"], CODE[field, "must be a string"], CODE[field, _ID_TEXT]


@dataclass
class Text:
    """A column as strings: `values` is null where the row has no value or one of the wrong type;
    `bad` says which (FINE, WRONG_TYPE, OUT_OF_RANGE for a product id integer)."""

    values: pa.StringArray
    bad: np.ndarray  # uint8

    @property
    def present(self) -> np.ndarray:
        """Rows with a value (of any type): the ones validate_event looks at."""
        return self.values.is_valid().to_numpy(zero_copy_only=False) | (self.bad != FINE)


def _as_array(column: Any) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    return column


def event_text(column: pa.Array | pa.ChunkedArray | Sequence[Any] | None, n: int, kind: str = "id") -> Text:
    """A column as validate_event sees its values (see the module's docstring). `kind`: "id" (an int is
    taken as its digits), "item" (likewise, if in 1..MAX_ITEM_ID) or "str" (only a string is a string)."""
    item_id, ints = kind == "item", kind != "str"
    bad = np.zeros(n, dtype=np.uint8)
    if column is None:
        return Text(pa.nulls(n, pa.string()), bad)
    if not isinstance(column, (pa.Array, pa.ChunkedArray)):
        return _python_text(column, item_id, ints)
    arr = _as_array(column)
    t = arr.type
    if pa.types.is_string(t):
        return Text(arr, bad)
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return Text(arr.cast(pa.string()), bad)
    if pa.types.is_null(t):
        return Text(pa.nulls(n, pa.string()), bad)
    if pa.types.is_integer(t) and ints:
        if item_id:
            in_range = pc.and_(pc.greater(arr, 0), pc.less_equal(arr, MAX_ITEM_ID))
            out = pc.fill_null(pc.invert(in_range), False).to_numpy(zero_copy_only=False)
            bad[out] = OUT_OF_RANGE
            arr = pc.if_else(in_range, arr, None)
        return Text(arr.cast(pa.string()), bad)
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        try:
            return Text(arr.cast(pa.string()), bad)
        except pa.ArrowInvalid:  # not all UTF-8: value by value
            return _python_text([None if v is None else _decode(v) for v in arr.to_pylist()], item_id, ints)
    # A float, a bool, a list, an object...: pocketrank.shared.schemas takes none of them for an id.
    bad[arr.is_valid().to_numpy(zero_copy_only=False)] = WRONG_TYPE
    return Text(pa.nulls(n, pa.string()), bad)


def _decode(value: bytes) -> Any:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value  # stays bytes: a wrong type


def _python_text(values: Sequence[Any], item_id: bool, ints: bool) -> Text:
    out: list[str | None] = []
    bad = np.zeros(len(values), dtype=np.uint8)
    for i, v in enumerate(values):
        if v is None or type(v) is str:
            out.append(v)
        elif ints and isinstance(v, int) and not isinstance(v, bool):
            if item_id and not 0 < v <= MAX_ITEM_ID:
                bad[i] = OUT_OF_RANGE
                out.append(None)
            else:
                out.append(str(v))
        elif isinstance(v, str):
            out.append(str(v))
        else:
            bad[i] = WRONG_TYPE
            out.append(None)
    return Text(pa.array(out, pa.string()), bad)


def _np(mask: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return pc.fill_null(mask, False).to_numpy(zero_copy_only=False)


def id_ok(values: pa.Array) -> np.ndarray:
    """pocketrank.shared.schemas.check_id's regex, per string (null: False)."""
    return _np(pc.and_(pc.match_substring_regex(values, ID_PATTERN), pc.less_equal(pc.binary_length(values), 64)))


def item_id_ok(values: pa.Array) -> np.ndarray:
    """pocketrank.shared.schemas.check_item_id for strings (null: False)."""
    return _np(pc.and_(pc.and_(pc.match_substring_regex(values, ITEM_ID_PATTERN), pc.less_equal(pc.utf8_length(values), 64)),
                       pc.less_equal(pc.binary_length(values), MAX_ITEM_ID_BYTES)))


def strip(values: pa.Array) -> pa.Array:
    """str.strip() of each string."""
    return pc.utf8_trim(values, WHITESPACE)


@dataclass
class EventColumns:
    event_id: Text
    user_id: Text
    device_id: Text
    session_id: Text
    type: Text
    item_id: Text
    query: Text
    time_code: np.ndarray  # pocketrank.server.data.timestamps codes


def event_columns(column: Callable[[str], Any], n: int, time_code: np.ndarray) -> EventColumns:
    """The columns check_events looks at, from `column(name)` (an Arrow column, Python values or None)."""
    return EventColumns(
        event_id=event_text(column("event_id"), n), user_id=event_text(column("user_id"), n),
        device_id=event_text(column("device_id"), n), session_id=event_text(column("session_id"), n),
        type=event_text(column("type"), n, "str"), item_id=event_text(column("item_id"), n, "item"),
        query=event_text(column("query"), n, "str"), time_code=time_code)


def check_events(cols: EventColumns) -> np.ndarray:
    """Per row, the REASONS code of the first check it fails in validate_event's order, or -1."""
    n = len(cols.time_code)
    code = np.full(n, -1, dtype=np.int16)

    def fail(mask: np.ndarray, c: int | np.ndarray) -> None:
        hit = mask & (code < 0)
        code[hit] = c if np.isscalar(c) else cast(np.ndarray, c)[hit]

    etype = cols.type.values
    type_ok = _np(pc.is_in(etype, value_set=pa.array(EVENT_TYPES)))
    fail(~type_ok, TYPE_BAD)
    search = _np(pc.equal(etype, "search"))
    other = type_ok & ~search

    query, item = cols.query, cols.item_id
    q_present, i_present = query.present, item.present
    q_text = _np(pc.match_substring_regex(query.values, NOT_ONLY_SPACE))
    fail(search & ~q_text, QUERY_REQUIRED)
    fail(search & _np(pc.greater(pc.utf8_length(query.values), MAX_QUERY_LEN)), QUERY_LONG)
    item_code = np.where(item.bad == WRONG_TYPE, ITEM_TYPE, np.where(item.bad == OUT_OF_RANGE, ITEM_RANGE, ITEM_TEXT))
    item_ok = item_id_ok(item.values)
    fail(search & i_present & ~item_ok, item_code)
    required = np.full(n, ITEM_REQUIRED[EVENT_TYPES[0]], dtype=np.int16)
    for t, c in ITEM_REQUIRED.items():
        required[_np(pc.equal(etype, t))] = c
    fail(other & ~i_present, required)
    fail(other & ~item_ok, item_code)
    fail(other & q_present, QUERY_NOT_ALLOWED)

    fail(cols.time_code == timestamps.MISSING, TS_MISSING)
    for name in ("event_id", "user_id", "device_id"):
        _check_id(getattr(cols, name), name, fail, required=name == "user_id")
    fail(cols.time_code == timestamps.UNPARSABLE, TS_UNPARSABLE)
    fail(cols.time_code == timestamps.OUT_OF_RANGE, TS_RANGE)
    _check_id(cols.session_id, "session_id", fail, required=False)
    return code


def _check_id(text: Text, field: str, fail, required: bool) -> None:
    missing, wrong, pattern = _id_codes(field)
    present = text.present
    if required:
        fail(~present, missing)
    fail(text.bad == WRONG_TYPE, wrong)
    fail(present & (text.bad == FINE) & ~id_ok(text.values), pattern)
