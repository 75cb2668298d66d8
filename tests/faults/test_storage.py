"""Storage that fills up or turns read-only, on a real file system (a tmpfs in a mount namespace): the SDK
says what is wrong, never advises deleting a database that holds queued events, and loses none of them."""

from __future__ import annotations

from .storage import count_uploads, needs_namespaces, run_child

pytestmark = needs_namespaces


def test_a_full_disk_keeps_every_event_says_so_and_does_not_upload_the_same_batch_again(live_server, tmp_path):
    uploads = count_uploads(live_server)
    out = run_child(scenario="full", dir=str(tmp_path / "mnt"), url=live_server.url)
    assert "storage is full" in out["track"] and "delete" not in out["track"]
    first, second, third = out["flush1"], out["flush2"], out["flush3"]
    # The server took the batch; the device could not delete it, and says what that means.
    assert first["acknowledged"] == 20 and first["remaining"] == 20
    assert "could not remove them" in first["error"] and "storage is full" in first["error"]
    # Before: every flush uploaded the same batch again. Now it retries the deletion first, and sends nothing.
    assert second["sent"] == 0 and "could not remove them" in second["error"]
    assert "storage is full" in out["status_error"]
    assert third["remaining"] == 0 and third["error"] is None
    assert uploads[0] == 1
    assert set(live_server.event_counts(out["promised"]).values()) == {1}


def test_read_only_storage_is_named_and_its_queued_events_are_kept(live_server, tmp_path):
    out = run_child(scenario="readonly", dir=str(tmp_path / "mnt"), url=live_server.url)
    assert out["recommend"] == "popular"  # still answers on the device
    track = out["track"]
    assert "read-only" in track and "delete" not in track and "5 queued events" in track
    # The upload went through, the deletion could not: said, and the events are still there.
    assert "could not remove them" in out["flush"]["error"] and "read-only" in out["flush"]["error"]
    assert out["queued"] == 5
    # Closed cleanly, a WAL database on read-only storage cannot even be opened: said, with what it holds.
    assert "read-only" in out["open"] and "delete" not in out["open"] and "5 queued events" in out["open"]
    assert out["flush_after"]["remaining"] == 0
    assert set(live_server.event_counts(out["promised"]).values()) == {1}
