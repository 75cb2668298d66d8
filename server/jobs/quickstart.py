"""`pocketrank train --interactions FILE --out HOME` and `pocketrank recommend`: the product in two steps.

Thin on purpose: the file is imported into a new home by the same importer as
`pocketrank import events`, trained and exported by the same jobs as `pocketrank
train` and `export`, and recommendations come from the server's own ranking path
(pocketrank.server.online.serving.Serving: retrieval, the exported ranker, business rules), so these
commands can never drift from what the server and devices run.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING

from pocketrank.shared.errors import DataError
from pocketrank.shared.schemas import check_id

from ..config import Config
from ..home import Home

if TYPE_CHECKING:
    import pyarrow as pa


def read_users(path: Path) -> list[str]:
    """User ids, one per line (blank lines and a `user_id` header skipped); DataError names a bad line."""
    users = []
    try:
        lines = Path(path).read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text (byte {exc.start})") from exc
    for n, line in enumerate(lines, 1):
        u = line.strip()
        if not u or (n == 1 and u == "user_id"):
            continue
        try:
            users.append(check_id("user_id", u))
        except ValueError as exc:
            raise DataError(f"{path}, line {n}: {exc}") from exc
    return users


def recommend_to_csv(home_dir: Path, users_file: Path, k: int, out: Path) -> int:
    """Write user_id,item_id,rank,score,path for every user of `users_file`; returns how many users."""
    from ..online.serving import Serving

    home = Path(home_dir).resolve()
    Home(home).current_model()  # a clear error before the server starts when nothing was trained
    users = read_users(users_file)
    serving = Serving(Config.from_env(home=home, updater="external"))
    cat = serving.catalogue
    tmp = out.with_name(out.name + ".part")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["user_id", "item_id", "rank", "score", "path"])
        for u in users:
            rec = serving.recommend(u, k)
            for rank, (item, score) in enumerate(rec.items, 1):
                w.writerow([u, cat.external_id(item), rank, f"{float(score):.6f}", rec.path])
    tmp.replace(out)  # never half a file at `out`
    return len(users)


def _read_all(path: Path) -> pa.Table:
    """The whole file as one table (text columns as read); a line that does not parse is a DataError."""
    import pyarrow as pa

    from ..data.formats import open_source

    parts = []
    for batch in open_source(path).batches():
        if batch.bad:
            line, reason = batch.bad[0][0], batch.bad[0][-1]
            raise DataError(f"{path}, line {line}: {reason}")
        parts.append(batch.table if batch.table is not None else pa.Table.from_pylist(batch.records))
    if not parts:
        raise DataError(f"{path} holds no rows")
    return pa.concat_tables(parts, promote_options="permissive")


def train_on_file(interactions: Path, out: Path, epochs: int | None = None, seed: int = 42, progress: bool = True,
                  kind: str = "sequence", settings: dict | None = None) -> dict:
    """Import a file of events into the new home `out` (a product per item id, named by it), train (`settings`:
    the sequence model's, as train_job takes them), export.

    The file needs user_id, item_id and timestamp; `type` defaults to click. For a real catalogue
    (titles, categories, prices), import it first with `pocketrank import catalogue` instead.
    """
    import pyarrow as pa

    from ..data.importer import import_catalogue, import_events
    from .train import export_job, train_job

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise DataError(f"{out} is not empty; --out names a new home")
    table = _read_all(Path(interactions))
    missing = {"user_id", "item_id", "timestamp"} - set(table.column_names)
    if missing:
        raise DataError(f"{interactions} has no {', '.join(sorted(missing))} column "
                        f"(it has {', '.join(table.column_names)})")
    if "type" not in table.column_names:
        table = table.append_column("type", pa.array(["click"] * table.num_rows))
    ids = sorted({str(v) for v in table.column("item_id").to_pylist() if v is not None})
    home = Home(out)
    store = home.store()
    catalogue = pa.table({"item_id": ids, "title": ids, "category": ["uncategorised"] * len(ids)})
    cat_report = import_catalogue(store, catalogue, progress=False)
    report = import_events(store, table, progress=progress)
    if report.accepted == 0:
        raise DataError(f"no event of {interactions} could be imported: {report.summary()}")
    trained = train_job(home, epochs=epochs, seed=seed, progress=progress, kind=kind, settings=settings)
    export_job(home)
    return {"import": report.to_dict(), "catalogue": cat_report.to_dict(), **trained}
