"""A MovieLens-100k home trained, exported and (optionally) published: what tests and benches start from.

    from lab.homes import movielens_home
    home = movielens_home(tmp / "home", epochs=2)                      # the sequence model, published
    home = movielens_home(tmp / "home", epochs=2, kind="fold")         # the older fold model
"""

from __future__ import annotations

from pathlib import Path


def movielens_home(root: Path, epochs: int, kind: str = "sequence", n_users: int = 100, publish: bool = True,
                   seed: int = 42, settings: dict | None = None):
    """Import MovieLens-100k into a new home at `root`, train `kind` for `epochs` (with the model's `settings`),
    export (gating on `n_users` users) and publish; returns the pocketrank.server.home.Home."""
    from pocketrank.server.bundle.publish import publish_job
    from pocketrank.server.data.datasets import import_movielens
    from pocketrank.server.home import Home
    from pocketrank.server.jobs.train import export_job, train_job

    home = Home(Path(root))
    store = home.store()
    import_movielens(store, "100k", progress=False)
    store.close()
    train_job(home, epochs=epochs, kind=kind, seed=seed, progress=False, settings=settings)
    export_job(home, n_users=n_users)
    if publish:
        publish_job(home, progress=False)
    return home


_SIDE = ("-wal", "-shm", "-journal")  # SQLite's files beside a database, named after it


def copy_home(src: Path, dst: Path, ignore=None) -> Path:
    """Copy a home to `dst` (which must not exist), its SQLite databases through SQLite's backup API.

    A plain file copy races whatever else has a store open: the WAL is checkpointed and deleted when the
    last connection closes (the store's checkpointer thread closes its own 30 s after the last write), which
    may fall between listing the directory and copying the file. The backup reads one consistent snapshot,
    WAL included, so the copy has no -wal, -shm or -journal files. `ignore`: as shutil.copytree's."""
    import shutil
    import sqlite3

    def side_files(folder: str, names: list[str]) -> set[str]:
        present = set(names)
        skip = {n for n in names if any(n.endswith(sfx) and n[:-len(sfx)] in present for sfx in _SIDE)}
        return skip | (set(ignore(folder, names)) if ignore else set())

    def copy(a: str, b: str) -> None:
        with open(a, "rb") as f:
            is_db = f.read(16) == b"SQLite format 3\x00"
        if not is_db:
            shutil.copy2(a, b)
            return
        source = sqlite3.connect(Path(a).resolve().as_uri() + "?mode=ro", uri=True)
        target = sqlite3.connect(b)
        try:
            source.backup(target)
        finally:
            target.close()
            source.close()

    return Path(shutil.copytree(src, dst, ignore=side_files, copy_function=copy))
