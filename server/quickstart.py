"""`pocketrank train --interactions FILE --out HOME` and `pocketrank recommend`: the product in two steps.

Thin on purpose: the file is imported into a new home by the same importer as
`pocketrank import events`, trained and exported by the same jobs as `pocketrank
train` and `export`, and recommendations come from the server's own ranking path
(server.serving.Serving: retrieval, the exported ranker, business rules), so these
commands can never drift from what the server and devices run.
"""

from __future__ import annotations

import csv
from pathlib import Path

from shared.errors import DataError
from shared.schemas import check_id

from .config import Config
from .home import Home


def read_users(path: Path) -> list[str]:
    """User ids, one per line (blank lines and a `user_id` header skipped); DataError names a bad line."""
    users = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
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
    from .serving import Serving

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
