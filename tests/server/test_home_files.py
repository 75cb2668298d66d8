"""Copying a home whose SQLite store is open elsewhere: the copy cannot race the WAL."""

from pathlib import Path

from lab.homes import copy_home
from pocketrank.server.home import Home


def test_a_copy_has_what_an_open_connection_wrote_and_no_wal_of_its_own(tmp_path):
    # The store's checkpointer thread holds a connection for 30 s after the last write; when it closes,
    # SQLite checkpoints and deletes the WAL. A plain copytree that listed the WAL just before failed on it
    # (CI, stop 26). The copy must not depend on the WAL file at all.
    home = Home(tmp_path / "home")
    (home.root / "keys").mkdir()
    (home.root / "keys" / "signing.pub").write_text("k\n")
    writer = home.store()  # held open: its writes sit in the WAL, not yet in store.sqlite
    writer.set_meta("current_model", "m-7")
    try:
        assert Path(str(home.store_path) + "-wal").exists()
        dst = copy_home(home.root, tmp_path / "copy")
    finally:
        writer.close()
    assert not list(dst.glob("*-wal")) and not list(dst.glob("*-shm"))
    assert (dst / "keys" / "signing.pub").read_text() == "k\n"
    assert Home(dst).current_model() == "m-7"


def test_other_files_nested_folders_and_odd_names_copy_as_they_are(tmp_path):
    import sqlite3

    src = tmp_path / "odd #1?"
    (src / "models" / "m-1").mkdir(parents=True)
    (src / "models" / "m-1" / "config.json").write_text("{}")
    (src / "notes.sqlite").write_bytes(b"not a database")  # named like one, copied byte for byte
    (src / "app.log-journal").write_text("a log")  # a -journal with no database of that name is just a file
    db = sqlite3.connect(src / "models" / "m-1" / "devices.sqlite")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t (x)")
    db.execute("INSERT INTO t VALUES (42)")
    db.commit()
    try:
        dst = copy_home(src, tmp_path / "copy", ignore=lambda folder, names: {n for n in names if n.endswith(".log")})
    finally:
        db.close()
    assert (dst / "notes.sqlite").read_bytes() == b"not a database"
    assert (dst / "app.log-journal").read_text() == "a log"
    assert (dst / "models" / "m-1" / "config.json").read_text() == "{}"
    copied = sqlite3.connect(dst / "models" / "m-1" / "devices.sqlite")
    assert copied.execute("SELECT x FROM t").fetchall() == [(42,)]
    copied.close()
    assert not list((dst / "models" / "m-1").glob("devices.sqlite-*"))
