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
