"""A MovieLens-100k home trained, exported and (optionally) published: what tests and benches start from.

    from lab.homes import movielens_home
    home = movielens_home(tmp / "home", epochs=2)                      # the sequence model, published
    home = movielens_home(tmp / "home", epochs=2, kind="fold")         # the older fold model
"""

from __future__ import annotations

from pathlib import Path


def movielens_home(root: Path, epochs: int, kind: str = "sequence", n_users: int = 100, publish: bool = True,
                   seed: int = 42):
    """Import MovieLens-100k into a new home at `root`, train `kind` for `epochs`, export (gating on `n_users`
    users) and publish; returns the pocketrank.server.home.Home."""
    from pocketrank.server.bundle.publish import publish_job
    from pocketrank.server.data.datasets import import_movielens
    from pocketrank.server.home import Home
    from pocketrank.server.jobs.train import export_job, train_job

    home = Home(Path(root))
    store = home.store()
    import_movielens(store, "100k", progress=False)
    store.close()
    train_job(home, epochs=epochs, kind=kind, seed=seed, progress=False)
    export_job(home, n_users=n_users)
    if publish:
        publish_job(home, progress=False)
    return home


def copy_home(src: Path, dst: Path) -> Path:
    """Copy a home to `dst` (which must not exist), its SQLite files through SQLite's backup API.

    A plain file copy races whatever else has the store open: the WAL is checkpointed and deleted when the
    last connection closes, which may be between listing the directory and copying the file. The backup
    API reads one consistent snapshot, WAL included, and the copy gets no -wal or -shm files of its own."""
    import shutil
    import sqlite3

    src, dst = Path(src), Path(dst)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.sqlite", "*.sqlite-wal", "*.sqlite-shm",
                                                            "*.sqlite-journal"))
    for db in src.rglob("*.sqlite"):
        source = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        target = sqlite3.connect(dst / db.relative_to(src))
        try:
            source.backup(target)
        finally:
            target.close()
            source.close()
    return dst
