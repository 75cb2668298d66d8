"""Importing several files as Ray tasks (each file parsed in a task, written here in file order) leaves
the store as importing them one after another does."""

from __future__ import annotations

import dataclasses
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from pocketrank.cli import main
from pocketrank.server.config import Config
from pocketrank.server.data.import_files import import_files
from pocketrank.server.home import Home
from tests.server.data.test_importers import items, log, write_csv, write_jsonl

FIELDS = ["user_id", "item_id", "type", "timestamp", "query", "event_id"]
PRODUCT_FIELDS = ["item_id", "title", "category", "price"]


def _products(n: int, price: float) -> list[dict]:
    return [{"item_id": f"SKU-{i}", "title": f"Thing {i}", "category": f"Cat > {i % 5}", "price": str(price + i)}
            for i in range(n)]


def _events(rng: random.Random, n: int, day: int) -> list[dict]:
    rows = []
    for k in range(n):
        etype = rng.choice(["view", "click", "add_to_cart", "purchase", "search"])
        rows.append({"user_id": f"u{rng.randrange(40)}", "item_id": None if etype == "search" else f"SKU-{rng.randrange(60)}",
                     "type": etype, "timestamp": str(1_700_000_000 + day * 86_400 + k * 7),
                     "query": "red shoes" if etype == "search" else None,
                     "event_id": f"e{day}-{k}" if k % 3 == 0 else None})
    return rows


@pytest.fixture
def files(tmp_path):
    """Two catalogue files (the second changes some prices and has a bad row) and three event files in the
    three formats, with bad rows, an unknown product and events repeated from an earlier file."""
    rng = random.Random(7)
    cat1 = write_csv(tmp_path / "products-1.csv", _products(50, 10.0), PRODUCT_FIELDS)
    second = _products(60, 10.0)[40:] + [{"item_id": "SKU-3", "title": "Thing 3", "category": "Cat > 3", "price": "99"},
                                         {"item_id": "SKU-bad", "title": "", "category": "X", "price": "-1"}]
    cat2 = write_jsonl(tmp_path / "products-2.jsonl", second)
    e1, e2, e3 = _events(rng, 300, 1), _events(rng, 300, 2), _events(rng, 300, 3)
    e2 += [{"user_id": "u1", "item_id": "SKU-nope", "type": "click", "timestamp": "1700300000"},
           {"user_id": "", "item_id": "SKU-1", "type": "click", "timestamp": "1700300001"}]
    e3 += e1[:25]  # repeated: the same event ids and content keys, duplicates
    ev1 = write_csv(tmp_path / "events-1.csv", e1, FIELDS)
    ev2 = write_jsonl(tmp_path / "events-2.jsonl", e2)
    pq.write_table(pa.table({k: pa.array([r.get(k) for r in e3], pa.string()) for k in FIELDS}),
                   tmp_path / "events-3.parquet")
    return [cat1, cat2], [ev1, ev2, tmp_path / "events-3.parquet"]


def _reports(reports) -> list[dict]:
    return [{**dataclasses.asdict(r), "seconds": None} for r in reports]


def test_files_parsed_on_ray_leave_the_store_as_one_process_does(tmp_path, files, ray_local):
    catalogues, events = files
    out = {}
    for name, address in (("single", ""), ("ray", "local")):
        root = tmp_path / name
        home = Home(root, Config(home=root, ray_address=address))
        reports = import_files(home, "catalogue", catalogues, progress=False)
        reports += import_files(home, "events", events, progress=False)
        store = home.store()
        out[name] = (_reports(reports), log(store), items(store))
        store.close()
    reports, events_logged, products = out["single"]
    assert [(r["accepted"], r["updated"], r["rejected"]) for r in reports[:2]] == [(50, 0, 0), (10, 1, 1)]
    assert reports[2]["accepted"] == 300 and reports[3]["rejected"] == 2 and reports[4]["duplicates"] >= 25
    assert len(events_logged) == sum(r["accepted"] for r in reports[2:]) and len(products) == 60
    assert out["ray"] == out["single"]


def test_import_events_command_takes_several_files_and_a_ray_address(tmp_path, files, ray_local):
    catalogues, events = files
    root = tmp_path / "home"
    runner = CliRunner()
    result = runner.invoke(main, ["import", "catalogue", *map(str, catalogues), "--home", str(root),
                                  "--ray-address", "local", "--no-progress"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["import", "events", *map(str, events), "--home", str(root),
                                  "--ray-address", "local", "--no-progress", "--json"])
    assert result.exit_code == 0, result.output
    assert result.output.count('"kind": "events"') == 3
