"""The generic importers: CSV, JSON Lines and Parquet of a marketplace's own catalogue and events,
into real SQLite stores (server/data/importer.py, formats.py, timestamps.py, checks.py)."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from pocketrank.cli import main
from pocketrank.server.config import Config
from pocketrank.server.data import checks, formats, timestamps
from pocketrank.server.data.importer import content_key, content_keys, import_catalogue, import_events
from pocketrank.server.data.report import BadRow
from pocketrank.server.home import Home
from pocketrank.shared.errors import DataError, ValidationError
from pocketrank.shared.schemas import check_id, validate_event

PRODUCTS = [
    {"item_id": "SKU-1", "title": "Chef knife", "category": "Home > Kitchen > Knives", "price": "39.90",
     "currency": "EUR", "stock": "3", "year": "2021", "attributes": '{"colour": "black", "blade_cm": 20}',
     "created_at": "2024-01-05T09:00:00+01:00"},
    {"item_id": "Café crème 250g", "title": "Coffee, \"crème\"", "category": "Food > Coffee", "price": "7",
     "categories": "Food|Food > Coffee|Breakfast", "in_stock": "false"},
    {"item_id": "42", "title": "A title\nover two lines", "category": "Books", "year": "1995.0",
     "created_at": "1700000000"},
    {"item_id": "sku 7/b", "title": "Tea", "category": "Food > Tea"},
]

# (user, product, type, ISO time, query)
EVENTS = [
    ("u1", "SKU-1", "view", "2024-03-01T10:00:00+02:00", None),
    ("u1", "SKU-1", "click", "2024-03-01T08:00:05Z", None),
    ("u2", "Café crème 250g", "purchase", "2024-03-01T08:01:00", None),
    ("u2", None, "search", "2024-03-01 08:02:00", "  espresso beans "),
    ("u3", "42", "add_to_cart", "2024-03-02", None),
    ("u3", "sku 7/b", "impression", "2024-03-02T00:00:00.250-01:30", None),
]
FIELDS = ["user_id", "item_id", "type", "timestamp", "query"]


@pytest.fixture
def home(tmp_path):
    root = tmp_path / "home"
    return Home(root, Config(home=root))


@pytest.fixture
def store(home):
    s = home.store()
    yield s
    s.close()


def write_csv(path, rows, fields):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(fields)
        for r in rows:
            w.writerow(["" if v is None else v for v in (r.get(k) for k in fields)] if isinstance(r, dict) else
                       ["" if v is None else v for v in r])
    return path


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps({k: v for k, v in r.items() if v is not None}, ensure_ascii=False) + "\n")
    return path


def as_dicts(rows, fields=FIELDS):
    return [dict(zip(fields, r)) for r in rows]


def catalogue_csv(tmp_path):
    fields = list(dict.fromkeys(k for p in PRODUCTS for k in p))
    return write_csv(tmp_path / "products.csv", PRODUCTS, fields)


def log(store):
    return [(e.event.event_id, e.event.user_id, e.event.device_id, e.event.type, e.event.timestamp,
             e.event.item_id, e.event.query, e.event.session_id) for e in store.iter_log()]


def items(store):
    return sorted(store.items(), key=lambda it: it.sku)


# --- catalogue ---


def test_catalogue_from_csv(store, tmp_path):
    report = import_catalogue(store, catalogue_csv(tmp_path), progress=False)
    assert (report.rows_read, report.accepted, report.rejected) == (4, 4, 0), report.summary()
    by_sku = {it.sku: it for it in store.items()}
    knife = by_sku["SKU-1"]
    assert knife.item_id > 0 and knife.price == 39.9 and knife.currency == "EUR" and knife.in_stock
    assert knife.category == "Home > Kitchen > Knives" and knife.year == 2021
    assert dict(knife.attributes) == {"colour": "black", "blade_cm": "20"}
    assert knife.created_at == 1704441600.0  # 08:00 UTC
    coffee = by_sku["Café crème 250g"]
    assert coffee.title == 'Coffee, "crème"' and not coffee.in_stock
    assert coffee.categories == ("Food", "Food > Coffee", "Breakfast")
    assert by_sku["42"].title == "A title\nover two lines" and by_sku["42"].year == 1995
    assert by_sku["42"].created_at == 1700000000.0
    assert by_sku["sku 7/b"].categories == ("Food", "Food > Tea")  # the path's levels by default


def test_catalogue_same_from_every_format(tmp_path):
    fields = list(dict.fromkeys(k for p in PRODUCTS for k in p))
    csv_path = write_csv(tmp_path / "p.csv", PRODUCTS, fields)
    jsonl_path = write_jsonl(tmp_path / "p.jsonl", PRODUCTS)
    table = pa.table({k: pa.array([p.get(k) for p in PRODUCTS], pa.string()) for k in fields})
    pq.write_table(table, tmp_path / "p.parquet")
    got = []
    for i, path in enumerate((csv_path, jsonl_path, tmp_path / "p.parquet", table)):
        root = tmp_path / f"h{i}"
        s = Home(root, Config(home=root)).store()
        report = import_catalogue(s, path, progress=False)
        assert report.accepted == 4 and report.rejected == 0, report.summary()
        got.append(items(s))
        s.close()
    assert got[0] == got[1] == got[2] == got[3]


def test_catalogue_typed_parquet(store, tmp_path):
    table = pa.table({
        "item_id": ["p1", "p2"], "title": ["One", "Two"], "category": ["A > B", "C"],
        "categories": pa.array([["A", "A > B", "Sale"], None], pa.list_(pa.string())),
        "year": pa.array([2001, None], pa.int32()), "price": [1.5, 2.0], "in_stock": [True, False],
        "attributes": pa.array([{"size": "M", "fit": None}, None],
                               pa.struct([("size", pa.string()), ("fit", pa.string())])),
        "created_at": pa.array([1_700_000_000_000, 1_700_000_001_000], pa.timestamp("ms")),
    })
    pq.write_table(table, tmp_path / "typed.parquet")
    report = import_catalogue(store, tmp_path / "typed.parquet", progress=False)
    assert report.accepted == 2, report.summary()
    p1, p2 = items(store)
    assert p1.categories == ("A", "A > B", "Sale") and p1.year == 2001 and dict(p1.attributes) == {"size": "M"}
    assert p1.created_at == 1_700_000_000.0 and not p2.in_stock and p2.year is None


def test_catalogue_bad_rows_named_and_reimport_adds_nothing(store, tmp_path):
    rows = PRODUCTS + [
        {"item_id": " padded", "title": "x", "category": "A"},
        {"item_id": "p-ok", "title": "Fine", "category": "A", "price": "-3"},
        {"item_id": "p-ok2", "title": "Fine", "category": "A", "attributes": "{not json"},
        {"item_id": "p-ok3", "title": "", "category": "A"},
        {"item_id": "p-ok4", "title": "Fine", "category": "A", "created_at": "yesterday"},
        {"item_id": "p-good", "title": "Good", "category": "A", "currency": "usd"},
    ]
    fields = list(dict.fromkeys(k for p in rows for k in p))
    path = write_csv(tmp_path / "p.csv", rows, fields)
    report = import_catalogue(store, path, progress=False)
    # PRODUCTS take lines 2-6 (one title spans two lines)
    assert report.accepted == 4 and report.rejected == 6, report.summary()
    assert [(b.line, b.field) for b in report.bad_rows] == [
        (7, "item_id"), (8, "price"), (9, "attributes"), (10, "title"), (11, "created_at"), (12, "currency")]
    assert report.rejected_by_field["price"] == 1
    version = store.catalogue_version()
    again = import_catalogue(store, path, progress=False)
    assert (again.accepted, again.updated, again.duplicates, again.rejected) == (0, 0, 4, 6)
    assert store.catalogue_version() == version  # nothing rewritten
    # a changed price is an update of the same product (same index)
    index = {it.sku: it.item_id for it in store.items()}
    rows[0] = {**rows[0], "price": "35"}
    write_csv(path, rows, fields)
    third = import_catalogue(store, path, progress=False)
    assert (third.accepted, third.updated, third.duplicates) == (0, 1, 3)
    assert {it.sku: it.item_id for it in store.items()} == index
    assert {it.sku: it.price for it in store.items()}["SKU-1"] == 35.0


# --- events ---


def _catalogue(store, tmp_path):
    report = import_catalogue(store, catalogue_csv(tmp_path), progress=False)
    assert report.accepted == len(PRODUCTS)


def event_files(tmp_path, rows=EVENTS, fields=FIELDS):
    dicts = as_dicts(rows, fields)
    csv_path = write_csv(tmp_path / "events.csv", rows, fields)
    jsonl_path = write_jsonl(tmp_path / "events.jsonl", dicts)
    table = pa.table({k: pa.array([d[k] for d in dicts], pa.string()) for k in fields})
    pq.write_table(table, tmp_path / "events.parquet")
    return [csv_path, jsonl_path, tmp_path / "events.parquet", table]


def test_events_same_store_contents_from_every_format(tmp_path):
    logs = []
    for i, path in enumerate(event_files(tmp_path)):
        root = tmp_path / f"h{i}"
        s = Home(root, Config(home=root)).store()
        _catalogue(s, tmp_path)
        report = import_events(s, path, progress=False)
        assert (report.rows_read, report.accepted, report.rejected) == (6, 6, 0), report.summary()
        logs.append(log(s))
        s.close()
    assert logs[0] == logs[1] == logs[2] == logs[3]
    ids = {it.sku: it.item_id for it in Home(tmp_path / "h0", Config(home=tmp_path / "h0")).store().items()}
    first = logs[0]
    assert [e[4] for e in first] == [1709280000.0, 1709280005.0, 1709280060.0, 1709280120.0, 1709337600.0,
                                     1709343000.25]
    assert [e[5] for e in first] == [ids["SKU-1"], ids["SKU-1"], ids["Café crème 250g"], None, ids["42"],
                                     ids["sku 7/b"]]
    assert first[3][6] == "espresso beans"  # stripped, as validate_event does
    assert {e[2] for e in first} == {"import"} and {e[7] for e in first} == {""}
    for e in first:
        check_id("event_id", e[0])
    assert first[0][0] == content_key("u1", "SKU-1", "view", 1709280000.0, None)


def test_timestamps_seconds_milliseconds_and_override(store, tmp_path):
    _catalogue(store, tmp_path)
    rows = [("u1", "SKU-1", "view", 1709280000), ("u1", "SKU-1", "click", 1709280001)]
    fields = ["user_id", "item_id", "type", "timestamp"]
    r = import_events(store, write_csv(tmp_path / "s.csv", rows, fields), progress=False)
    assert r.accepted == 2 and r.time_unit == "s"
    ms = [("u2", "SKU-1", "view", 1709280000123), ("u2", "SKU-1", "click", 1709280001000)]
    r = import_events(store, write_jsonl(tmp_path / "ms.jsonl", as_dicts(ms, fields)), progress=False)
    assert r.accepted == 2 and r.time_unit == "ms"
    assert sorted(e[4] for e in log(store) if e[1] == "u2") == [1709280000.123, 1709280001.0]
    # forced seconds: milliseconds are then after 2100 and rejected, by line
    r = import_events(store, tmp_path / "ms.jsonl", time_unit="s", progress=False)
    assert r.accepted == 0 and r.rejected == 2 and not r.ok
    assert r.bad_rows[0] == BadRow(1, "timestamp", "must be between 1970 and 2100 (read as epoch seconds; "
                                                       "--time-unit sets the unit)")
    # forced ISO: numbers are not times
    r = import_events(store, tmp_path / "s.csv", time_unit="iso", progress=False)
    assert r.rejected == 2 and r.bad_rows[0].field == "timestamp" and "ISO-8601" in r.bad_rows[0].reason


def test_time_parser_rules():
    p = timestamps.TimeParser()
    text = ["2024-03-01T10:00:00+02:00", "2024-03-01T08:00:00Z", "2024-03-01T08:00:00", "2024-03-01 08:00",
            "2024-03-01T09:30:00.5+0130", "2024-03-01T07:00:00-01", "2024-02-29", "2023-02-29", "2024-03-01T24:00",
            "1969-12-31T23:59:59Z", "2100-01-01T00:00:00Z", "2100-01-01T00:00:01Z", "soon", None, " 1709280000 "]
    seconds, code = p.parse(pa.array(text))
    assert seconds[:6].tolist() == [1709280000.0] * 4 + [1709280000.5, 1709280000.0]
    assert seconds[6] == 1709164800.0 and seconds[10] == 4102444800.0 and seconds[14] == 1709280000.0
    assert code.tolist() == [0] * 7 + [timestamps.UNPARSABLE] * 2 + [timestamps.OUT_OF_RANGE, 0,
                                                                     timestamps.OUT_OF_RANGE, timestamps.UNPARSABLE,
                                                                     timestamps.MISSING, 0]
    # the unit is decided once, from the first numbers seen: milliseconds by magnitude
    p = timestamps.TimeParser()
    assert p.parse(pa.array([1709280000123, 1709280000456]))[0].tolist() == [1709280000.123, 1709280000.456]
    assert p.unit == "ms"
    seconds, code = p.parse(pa.array([1709280000]))  # a stray value in seconds is then out of range
    assert code.tolist() == [timestamps.OUT_OF_RANGE]
    p = timestamps.TimeParser()
    assert p.parse(pa.array([1.7e9, 1.8e9]))[1].tolist() == [0, 0] and p.unit == "s"
    # Arrow timestamps (naive = UTC), with a zone, and dates
    p = timestamps.TimeParser()
    ts = pa.array([1709280000000], pa.timestamp("ms"))
    assert p.parse(ts)[0].tolist() == [1709280000.0]
    assert p.parse(ts.cast(pa.timestamp("ms", tz="Europe/Paris")))[0].tolist() == [1709280000.0]
    assert p.parse(pa.array([19783], pa.date32()))[0].tolist() == [1709251200.0]
    # Python values from the per-line JSON parser
    s, c = timestamps.TimeParser().parse_values([1709280000, "2024-03-01T08:00:00Z", True, None, 10**40, [1]])
    assert c.tolist() == [0, 0, timestamps.UNPARSABLE, timestamps.MISSING, timestamps.OUT_OF_RANGE,
                          timestamps.UNPARSABLE]


def test_mapping(store, tmp_path):
    _catalogue(store, tmp_path)
    rows = [("c1", "SKU-1", "view", "2024-03-01T10:00:00Z", "zzz"), ("c2", "42", "click", "2024-03-01T11:00:00Z", "q")]
    path = write_csv(tmp_path / "m.csv", rows, ["customer_id", "product", "action", "when", "extra"])
    mapping = {"user_id": "customer_id", "item_id": "product", "type": "action", "timestamp": "when"}
    for source in (path, pcsv.read_csv(path)):
        report = import_events(store, source, mapping=mapping, progress=False)
        assert report.rows_read == 2 and report.accepted + report.duplicates == 2 and report.rejected == 0
        assert report.ignored_columns == ["extra"]
    assert sorted(e[1] for e in log(store)) == ["c1", "c2"]
    with pytest.raises(DataError, match="user_id=client.*columns: customer_id, product, action, when, extra"):
        import_events(store, path, mapping={**mapping, "user_id": "client"}, progress=False)
    with pytest.raises(DataError, match="no field 'colour'"):
        import_events(store, path, mapping={**mapping, "colour": "extra"}, progress=False)
    with pytest.raises(DataError, match="no user_id or type or timestamp or item_id column"):
        import_events(store, path, progress=False)


def test_bad_row_named_by_line_and_field_rows_around_it_imported(store, tmp_path):
    _catalogue(store, tmp_path)
    rows = [("u1", "SKU-1", "view", "2024-03-01T10:00:00Z"), ("u1", "SKU-1", "click", "2024-13-01T10:00:00Z"),
            ("u 2", "SKU-1", "view", "2024-03-01T10:00:00Z"), ("u3", "SKU-1", "like", "2024-03-01T10:00:00Z"),
            ("u4", "no-such-sku", "view", "2024-03-01T10:00:00Z"), ("u5", "42", "view", "2024-03-01T10:00:00Z")]
    fields = ["user_id", "item_id", "type", "timestamp"]
    csv_path = write_csv(tmp_path / "b.csv", rows, fields)
    for path in (csv_path, write_jsonl(tmp_path / "b.jsonl", as_dicts(rows, fields))):
        report = import_events(store, path, progress=False)
        offset = 1 if path.suffix == ".csv" else 0  # the CSV header is line 1
        assert report.rows_read == 6 and report.rejected == 4, report.summary()
        assert [(b.line - offset, b.field) for b in report.bad_rows] == [
            (2, "timestamp"), (3, "user_id"), (4, "type"), (5, "item_id")]
        assert report.bad_rows[3].reason == "is not in the catalogue; import the catalogue first"
        assert report.rejected_by_field == {"timestamp": 1, "user_id": 1, "type": 1, "item_id": 1}
        assert report.ok
    assert sorted(e[1] for e in log(store)) == ["u1", "u5"]  # imported once, then duplicates
    summary = report.summary()
    assert "line 5: item_id: is not in the catalogue" in summary and "duplicates:      2" in summary


def test_parquet_bad_row_named_by_row(store, tmp_path):
    _catalogue(store, tmp_path)
    table = pa.table({"user_id": ["u1", "u2", None], "item_id": ["SKU-1", "SKU-1", "SKU-1"],
                      "type": ["view", "view", "view"], "timestamp": pa.array([1.7e9, math.nan, 1.7e9])})
    pq.write_table(table, tmp_path / "e.parquet")
    report = import_events(store, tmp_path / "e.parquet", progress=False, batch_rows=2)
    assert report.accepted == 1 and report.position == "row"
    assert [(b.line, b.field) for b in report.bad_rows] == [(2, "timestamp"), (3, "user_id")]
    assert "row 3: user_id: is required" in report.summary()


def test_malformed_csv_line_does_not_stop_the_import(store, tmp_path):
    _catalogue(store, tmp_path)
    text = ("user_id,item_id,type,timestamp\n"
            "u1,SKU-1,view,1709280000\n"
            "u2,SKU-1,view\n"  # a field short
            "\n"  # blank lines are skipped (but counted)
            'u3,"SKU-1",view,1709280001,extra\n'
            'u4,"42",view,1709280002\n'
            "u5,SKU-1,vi\xe9w,1709280003\n")
    path = tmp_path / "m.csv"
    path.write_bytes(text.encode("utf-8").replace("\xe9".encode(), b"\xe9"))  # one line of Latin-1
    for chunk in (7, 1 << 20):  # pieces cut inside the file, or the whole file at once
        src = formats.open_source(path, chunk_bytes=chunk)
        rows, bad = [], []
        for b in src.batches():
            rows += list(zip(b.lines.tolist(), b.table["user_id"].to_pylist()))
            bad += b.bad
        assert rows == [(2, "u1"), (6, "u4")]
        assert bad == [(3, "has 3 fields where the header has 4"), (5, "has 5 fields where the header has 4"),
                       (7, "is not valid UTF-8 text")]
    report = import_events(store, path, progress=False)
    assert (report.rows_read, report.accepted, report.rejected) == (5, 2, 3)
    assert report.rejected_by_field == {"line": 3}
    assert [b.line for b in report.bad_rows] == [3, 5, 7]


def test_csv_quoted_values_and_compression(store, tmp_path):
    _catalogue(store, tmp_path)
    text = ('user_id;item_id;type;timestamp;query\n'
            'u1;"sku 7/b";view;1709280000;\n'
            'u2;;search;1709280001;"red\nshoes; ""cheap"""\n'
            'u3;SKU-1;view;"not a time";\n')
    path = tmp_path / "q.csv.gz"
    path.write_bytes(gzip.compress(text.encode()))
    report = import_events(store, path, progress=False)
    assert report.accepted == 2 and report.bad_rows == [BadRow(5, "timestamp", timestamps.TimeParser().reason(2))]
    assert [e[6] for e in log(store)] == [None, 'red\nshoes; "cheap"']


def test_malformed_json_line_does_not_stop_the_import(store, tmp_path):
    _catalogue(store, tmp_path)
    lines = ['{"user_id": "u1", "item_id": "SKU-1", "type": "view", "timestamp": 1709280000}',
             '{"user_id": "u2", "item_id": "SKU-1", "type": "view", "timestamp": 1709280000',
             '',
             '["not", "an", "object"]',
             '{"user_id": 7, "item_id": 42, "type": "view", "timestamp": "2024-03-01T08:00:00Z"}',
             '{"user_id": "u8", "item_id": 42.0, "type": "view", "timestamp": 1709280000}',
             '{"user_id": "u9", "item_id": "\\ud800", "type": "view", "timestamp": 1709280000}',
             '{"user_id": "u10", "item_id": "SKU-1", "type": "click", "timestamp": 1709280001}']
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(lines) + "\n")
    report = import_events(store, path, progress=False)
    assert (report.rows_read, report.accepted, report.rejected) == (7, 3, 4), report.summary()
    assert [(b.line, b.field) for b in report.bad_rows] == [(2, "line"), (4, "line"), (6, "item_id"), (7, "line")]
    assert report.bad_rows[0].reason.startswith("is not valid JSON")
    assert report.bad_rows[2].reason == "must be a string (the product's own id)"  # like validate_event
    users = [e[1] for e in log(store)]
    assert users == ["u1", "7", "u10"]  # an integer id is its digits, as on the wire


def test_jsonl_pieces_split_around_a_bad_line(store, tmp_path):
    _catalogue(store, tmp_path)
    good = '{"user_id": "u%d", "item_id": "SKU-1", "type": "view", "timestamp": %d}'
    lines = [good % (i, 1709280000 + i) for i in range(6000)]
    lines[4321] = "{oops"
    path = tmp_path / "big.jsonl"
    path.write_text("\n".join(lines) + "\n")
    report = import_events(store, path, progress=False, batch_rows=1000)
    assert (report.accepted, report.rejected) == (5999, 1)
    assert report.bad_rows[0].line == 4322
    again = import_events(store, path, progress=False)
    assert (again.accepted, again.duplicates, again.rejected) == (0, 5999, 1) and again.ok


def test_reimport_adds_nothing_with_and_without_event_ids(store, tmp_path):
    _catalogue(store, tmp_path)
    files = event_files(tmp_path)
    first = import_events(store, files[0], progress=False)
    assert first.accepted == 6
    for path in files:  # the same events in any format have the same content keys
        again = import_events(store, path, progress=False)
        assert (again.accepted, again.duplicates, again.rejected) == (0, 6, 0) and again.ok
        assert "nothing new" in again.summary()
    assert store.count_events() == 6
    rows = [(f"e-{i}", *r) for i, r in enumerate(EVENTS)] + [("e-0", "u9", "SKU-1", "view", "2024-03-03", None)]
    path = write_csv(tmp_path / "ids.csv", rows, ["event_id", *FIELDS])
    r = import_events(store, path, progress=False)
    assert (r.accepted, r.duplicates) == (6, 1)  # e-0 twice in the file: the first wins
    r = import_events(store, path, progress=False)
    assert (r.accepted, r.duplicates) == (0, 7)
    assert store.count_events() == 12


def test_events_need_the_catalogue(store, tmp_path):
    report = import_events(store, event_files(tmp_path)[0], progress=False)
    assert report.accepted == 1 and report.rejected == 5  # the search names no product
    assert report.rejected_by_field == {"item_id": 5}
    assert store.count_events() == 1
    only_products = [r for r in EVENTS if r[1] is not None]
    report = import_events(store, write_csv(tmp_path / "p.csv", only_products, FIELDS), progress=False)
    assert report.rejected == 5 and not report.ok and "nothing was imported" in report.summary()


def test_content_key():
    key = content_key("u1", "SKU-1", "view", 1709280000.0, None)
    assert key == "k18df906f800" + key[12:] and len(key) == 36 and check_id("event_id", key) == key
    assert int(key[1:12], 16) == 1709280000000  # the prefix is the time in milliseconds
    assert content_key("u1", "SKU-1", "view", 1709280000.0004, None) == key  # same millisecond
    assert content_key("u1", "SKU-1", "view", 1709280000.001, None) != key
    assert content_key("u1", "SKU-1", "click", 1709280000.0, None) != key
    # pinned: a different key would make events imported before a change count as new after it
    digest = hashlib.blake2b(b"u1\x1fSKU-1\x1fview\x1f1709280000000\x1f", digest_size=12).hexdigest()
    assert key == "k18df906f800" + digest == "k18df906f800e676e3d1db23237784ba678c"
    users, products = pa.array(["u1", "u2"]), pa.array(["SKU-1", None])
    got = content_keys(users, products, pa.array(["view", "search"]), np.array([1709280000.0, 5.5]),
                       pa.array([None, "shoes"]))
    assert got == [key, content_key("u2", None, "search", 5.5, "shoes")]


# --- the vectorised checks decide exactly as validate_event ---

BASE = {"user_id": "u1", "item_id": "SKU-1", "type": "view", "timestamp": 1.7e9}
TRICKY = [
    BASE, {**BASE, "type": "View"}, {**BASE, "type": 5}, {k: v for k, v in BASE.items() if k != "type"},
    {**BASE, "type": ""},
    {**BASE, "user_id": ""}, {**BASE, "user_id": "a b"}, {**BASE, "user_id": "x" * 64}, {**BASE, "user_id": "x" * 65},
    {**BASE, "user_id": 12}, {**BASE, "user_id": -3}, {**BASE, "user_id": True}, {**BASE, "user_id": 1.5},
    {**BASE, "user_id": "u\n"}, {**BASE, "user_id": "é"}, {**BASE, "user_id": 10**70},
    {k: v for k, v in BASE.items() if k != "user_id"}, {**BASE, "user_id": ["u1"]},
    {**BASE, "item_id": " SKU"}, {**BASE, "item_id": "SKU "}, {**BASE, "item_id": "S\u00a0"},
    {**BASE, "item_id": "\u2003S"}, {**BASE, "item_id": "a\x1fb"}, {**BASE, "item_id": "a b"},
    {**BASE, "item_id": "a\x1cb"}, {**BASE, "item_id": "a\u0085"}, {**BASE, "item_id": "x" * 64},
    {**BASE, "item_id": "x" * 65}, {**BASE, "item_id": "é" * 64}, {**BASE, "item_id": "é" * 65},
    {**BASE, "item_id": "a\tb"}, {**BASE, "item_id": "a\x7fb"}, {**BASE, "item_id": "\U0001f600"},
    {**BASE, "item_id": 0}, {**BASE, "item_id": -1}, {**BASE, "item_id": 2**31 - 1}, {**BASE, "item_id": 2**31},
    {**BASE, "item_id": True}, {**BASE, "item_id": 1.0}, {**BASE, "item_id": ""}, {**BASE, "item_id": {"a": 1}},
    {k: v for k, v in BASE.items() if k != "item_id"},
    {k: v for k, v in {**BASE, "type": "purchase"}.items() if k != "item_id"},
    {**BASE, "type": "search", "query": "shoes"}, {**BASE, "type": "search", "query": "  "},
    {**BASE, "type": "search", "query": ""}, {**BASE, "type": "search", "query": "\u3000x\u2028"},
    {**BASE, "type": "search", "query": "x" * 256}, {**BASE, "type": "search", "query": "x" * 257},
    {**BASE, "type": "search", "query": " " + "x" * 256}, {**BASE, "type": "search", "query": 5},
    {**BASE, "type": "search", "query": "\x1c\x1d"},
    {"user_id": "u1", "type": "search", "query": "q", "timestamp": 1.7e9},
    {**BASE, "type": "search", "query": "q", "item_id": ""}, {**BASE, "type": "search", "query": "q", "item_id": 0},
    {**BASE, "type": "search"}, {**BASE, "query": ""}, {**BASE, "query": "x"}, {**BASE, "query": 3},
    {k: v for k, v in BASE.items() if k != "timestamp"}, {**BASE, "timestamp": -1}, {**BASE, "timestamp": 0},
    {**BASE, "timestamp": 4102444800}, {**BASE, "timestamp": 4102444800.5}, {**BASE, "timestamp": math.nan},
    {**BASE, "timestamp": math.inf}, {**BASE, "timestamp": True}, {**BASE, "timestamp": 10**400},
    {**BASE, "event_id": "e-1"}, {**BASE, "event_id": ""}, {**BASE, "event_id": "bad id"}, {**BASE, "event_id": 7},
    {**BASE, "event_id": False}, {**BASE, "session_id": "s.1:2"}, {**BASE, "session_id": ""},
    {**BASE, "session_id": "bad id"}, {**BASE, "session_id": 3}, {**BASE, "session_id": 3.5},
    {**BASE, "device_id": "d1"}, {**BASE, "device_id": ""}, {**BASE, "device_id": "bad id"},
    {**BASE, "device_id": None},
    # several faults at once: the first in validate_event's order is named
    {**BASE, "type": "nope", "user_id": "bad id"}, {**BASE, "user_id": "bad id", "timestamp": -5},
    {**BASE, "event_id": "bad id", "user_id": "bad id"}, {**BASE, "item_id": " x", "timestamp": -1},
    {**BASE, "session_id": "bad id", "timestamp": -1}, {**BASE, "device_id": "?", "user_id": "?"},
    {"type": "search", "query": "", "item_id": " x", "timestamp": -1},
    {**BASE, "query": "q", "item_id": " x"},
    {k: v for k, v in {**BASE, "event_id": "bad id"}.items() if k != "timestamp"},
]


def _expected(row: dict) -> tuple[str, str] | None:
    """validate_event's decision on the row as the importer completes it (device "import", a content key)."""
    row = {k: v for k, v in row.items() if v is not None}
    row.setdefault("device_id", "import")
    row.setdefault("event_id", "k0")
    try:
        validate_event(row)
    except ValidationError as exc:
        return exc.field, exc.message
    return None


def _decided(columns, n: int, parse) -> list[tuple[str, str] | None]:
    p = timestamps.TimeParser("s")
    ts = columns("timestamp")
    seconds, code = (np.full(n, np.nan), np.full(n, timestamps.MISSING, np.uint8)) if ts is None else parse(p, ts)
    codes = checks.check_events(checks.event_columns(columns, n, code))
    return [None if c < 0 else checks.REASONS[c] for c in codes.tolist()]


def _same_decision(expected, got) -> bool:
    if expected is None or got is None or expected[0] != "timestamp":
        return expected == got
    return got[0] == "timestamp"  # the importer words time problems its own way


def test_vectorised_checks_decide_like_validate_event():
    expected = [_expected(r) for r in TRICKY]
    assert sum(e is None for e in expected) > 10 and sum(e is not None for e in expected) > 50
    # Python values (the per-line JSON path), all rows in one batch
    got = _decided(lambda name: [r.get(name) for r in TRICKY] if any(name in r for r in TRICKY) else None,
                   len(TRICKY), lambda p, values: p.parse_values(values))
    for row, e, g in zip(TRICKY, expected, got):
        assert _same_decision(e, g), (row, e, g)
    # Arrow columns as pyarrow infers them (JSON, Parquet), a row at a time
    checked = 0
    for row, e in zip(TRICKY, expected):
        try:
            arrays = {k: pa.array([v]) for k, v in row.items()}
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            continue  # a value Arrow cannot hold (10**70) never comes out of an Arrow reader
        if any(pa.types.is_floating(a.type) for k, a in arrays.items() if k != "timestamp"):
            continue  # the JSON reader sends these through the per-line parser (a float may be a big int)
        g = _decided(arrays.get, 1, lambda p, col: p.parse(col))[0]
        assert _same_decision(e, g), (row, e, g)
        checked += 1
    assert checked > 70


def test_regexes_match_shared_schemas_on_every_character():
    from pocketrank.shared.schemas import ID_RE, ITEM_ID_RE

    chars = [chr(c) for c in range(0x3100)] + ["\U0001f600", "\ufeff", "\u2060"]
    chars = [c for c in chars if not 0xD800 <= ord(c) <= 0xDFFF]
    samples = [s for c in chars for s in (c, "a" + c, c + "a", "a" + c + "b")]
    values = pa.array(samples)
    assert checks.item_id_ok(values).tolist() == [bool(ITEM_ID_RE.fullmatch(s)) for s in samples]
    assert checks.id_ok(values).tolist() == [bool(ID_RE.fullmatch(s)) for s in samples]
    assert checks.strip(values).to_pylist() == [s.strip() for s in samples]


# --- the command line ---


def test_cli_imports_and_reports(tmp_path):
    root = tmp_path / "home"
    runner = CliRunner()
    products = str(catalogue_csv(tmp_path))
    out = runner.invoke(main, ["import", "catalogue", products, "--home", str(root), "--no-progress"])
    assert out.exit_code == 0, out.output
    assert "accepted (new):  4" in out.output
    path = event_files(tmp_path)[2]
    out = runner.invoke(main, ["import", "events", str(path), "--home", str(root), "--no-progress", "--json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.output)
    assert report["accepted"] == 6 and report["rejected"] == 0 and report["ok"] and report["format"] == "parquet"
    out = runner.invoke(main, ["import", "events", str(path), "--home", str(root), "--no-progress"])
    assert out.exit_code == 0 and "nothing new" in out.output and "duplicates:      6" in out.output
    rows = [("c1", "SKU-1", "view", 1709280000123), ("c1", "nope", "view", 1709280000124)]
    mapped = write_csv(tmp_path / "m.csv", rows, ["customer", "product", "type", "ts"])
    out = runner.invoke(main, ["import", "events", str(mapped), "--home", str(root), "--no-progress", "--map",
                               "user_id=customer", "--map", "item_id=product", "--map", "timestamp=ts"])
    assert out.exit_code == 0, out.output
    assert "accepted (new):  1" in out.output and "line 3: item_id: is not in the catalogue" in out.output
    assert "epoch milliseconds" in out.output
    out = runner.invoke(main, ["import", "events", str(mapped), "--home", str(root), "--no-progress", "--map",
                               "user_id=customer", "--map", "item_id=product", "--map", "timestamp=ts",
                               "--time-unit", "s"])
    assert out.exit_code == 1 and "nothing was imported" in out.output


@pytest.mark.parametrize("args, message", [
    (["events", "{tmp}/missing.csv"], "missing.csv does not exist"),
    (["events", "{tmp}/e.xml"], "cannot tell the format of e.xml"),
    (["events", "{tmp}/e.csv", "--format", "xml"], "unknown format 'xml'"),
    (["events", "{tmp}/e.csv", "--map", "user_id=client"], "the mapping user_id=client names a column"),
    (["events", "{tmp}/e.csv", "--map", "user_id"], "write it as FIELD=COLUMN"),
    (["events", "{tmp}/e.csv", "--map", "colour=type"], "no field 'colour'"),
    (["events", "{tmp}/e.csv", "--home", "{tmp}/nowhere"], "no pocketrank home"),
    (["catalogue", "{tmp}/e.csv"], "no title or category column"),
])
def test_cli_errors_are_one_line(tmp_path, args, message):
    root = tmp_path / "home"
    root.mkdir()
    write_csv(tmp_path / "e.csv", EVENTS, FIELDS)
    (tmp_path / "e.xml").write_text("<x/>")
    args = [a.format(tmp=tmp_path) for a in args]
    if "--home" not in args:
        args += ["--home", str(root)]
    out = CliRunner().invoke(main, ["import", *args, "--no-progress"])
    assert out.exit_code == 1, out.output
    assert message in out.output and len(out.output.strip().splitlines()) == 1, out.output
    assert "Traceback" not in out.output
