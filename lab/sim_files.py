"""The simulator's marketplace written as the files a marketplace would export (synthetic, seeded).

What `pocketrank import` reads from a real shop: a catalogue with string SKUs
("SKU-000042"), a category path ("Electronics > Sim"), a price in EUR, stock
and an arrival time; and an event log with string user ids, ISO-8601
timestamps with a time zone, impressions, clicks, searches, carts and
purchases. Everything here is synthetic (lab/simulator.py) and labelled so;
it stands in for a marketplace's export in tests and benchmarks, never for
judging model quality.

    write_marketplace(MarketplaceSimulator(SimConfig(n_users=300)), Path("shop"), "parquet")
    # -> shop/catalogue.parquet, shop/events.parquet
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .simulator import MarketplaceSimulator

FORMATS = ("parquet", "jsonl", "csv")


def sku(item_id: int) -> str:
    return f"SKU-{int(item_id):06d}"


def catalogue_table(sim: MarketplaceSimulator):
    import pyarrow as pa

    items = sim.items
    return pa.table({
        "sku": [sku(it.item_id) for it in items],
        "name": [it.title for it in items],
        "category_path": [f"{it.category} > Sim" for it in items],
        "price": [float(it.price) for it in items],
        "currency": ["EUR"] * len(items),
        "stock": [7 if it.in_stock else 0 for it in items],
        "created_at": [dt.datetime.fromtimestamp(sim.arrival_time(it.item_id), dt.timezone.utc).isoformat()
                       for it in items],
    })


def event_batches(sim: MarketplaceSimulator, limit: int | None = None, batch: int = 200_000) -> Iterator:
    """The event log as pyarrow RecordBatches in time order (timestamps ISO-8601 with +01:00)."""
    import pyarrow as pa

    tz = dt.timezone(dt.timedelta(hours=1))
    cols: dict[str, list] = {k: [] for k in ("event_id", "customer_id", "sku", "event_type", "ts", "query",
                                             "session_id")}
    n = 0
    for e in sim.events():
        cols["event_id"].append(e.event_id)
        cols["customer_id"].append(e.user_id)
        cols["sku"].append(None if e.item_id is None else sku(e.item_id))
        cols["event_type"].append(e.type)
        cols["ts"].append(e.timestamp)
        cols["query"].append(e.query)
        cols["session_id"].append(e.session_id)
        n += 1
        if len(cols["ts"]) == batch or n == limit:
            yield _batch(pa, cols, tz)
            cols = {k: [] for k in cols}
            if n == limit:
                return
    if cols["ts"]:
        yield _batch(pa, cols, tz)


def _batch(pa, cols: dict[str, list], tz: dt.timezone):
    ts = np.asarray(cols["ts"], dtype=np.float64)
    iso = [dt.datetime.fromtimestamp(t, tz).isoformat(timespec="milliseconds") for t in ts.tolist()]
    return pa.record_batch({**{k: v for k, v in cols.items() if k != "ts"}, "ts": iso})


def write_marketplace(sim: MarketplaceSimulator, folder: Path, fmt: str = "parquet",
                      limit: int | None = None) -> tuple[Path, Path]:
    """catalogue.<fmt> and events.<fmt> in `folder`; the column names are the shop's own (map them on import:
    --map item_id=sku --map user_id=customer_id --map type=event_type --map timestamp=ts ...)."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ext = {"parquet": "parquet", "jsonl": "jsonl", "csv": "csv"}[fmt]
    cat_path, ev_path = folder / f"catalogue.{ext}", folder / f"events.{ext}"
    tables = [("catalogue", cat_path, iter([catalogue_table(sim).to_batches()[0]])),
              ("events", ev_path, event_batches(sim, limit))]
    for _name, path, batches in tables:
        first = next(batches, None)
        if first is None:
            continue
        if fmt == "parquet":
            with pq.ParquetWriter(path, first.schema) as w:
                w.write_batch(first)
                for b in batches:
                    w.write_batch(b)
        elif fmt == "csv":
            with pacsv.CSVWriter(path, first.schema) as w:
                w.write_batch(first)
                for b in batches:
                    w.write_batch(b)
        else:
            import json

            with open(path, "w", encoding="utf-8") as f:
                for b in [first, *batches]:
                    for row in b.to_pylist():
                        f.write(json.dumps({k: v for k, v in row.items() if v is not None}) + "\n")
    return cat_path, ev_path


# The --map options that import these files (canonical name -> the shop's column).
CATALOGUE_MAP = {"item_id": "sku", "title": "name", "category": "category_path"}
EVENTS_MAP = {"user_id": "customer_id", "item_id": "sku", "type": "event_type", "timestamp": "ts"}
