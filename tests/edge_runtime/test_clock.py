"""A wrong device clock loses no event and is named as the problem: against the real Flask app, with the
device's wall clock set ahead (the server's is the machine's)."""

from __future__ import annotations

import time

import httpx
import pytest

from pocketrank.edge_runtime import EdgeClient, SignatureError
from pocketrank.edge_runtime.transport import Transport

USER = "196"


def phone(app, public_key, path, offset: float) -> EdgeClient:
    transport = Transport(client=httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://test"))
    return EdgeClient(path, public_key, transport=transport, device_id="clock-phone",
                      clock=lambda: time.time() + offset)


def timestamps(app, ids: list[str]) -> list[float]:
    store = app.extensions["pocketrank"].store
    return [r[0] for r in store.db.execute(f"SELECT timestamp FROM events WHERE event_id IN "
                                           f"({','.join('?' * len(ids))})", ids)]


def test_events_dated_in_the_servers_future_are_redated_by_its_clock_not_set_aside(app, public_key, tmp_path):
    """Before: more than a day ahead, they were rejected and set aside for good, even once the clock was fixed."""
    c = phone(app, public_key, tmp_path / "d.sqlite", offset=3 * 86400)
    ids = [c.track(USER, "click", item) for item in ("1", "2")]
    result = c.flush()
    assert (result.acknowledged, result.rejected, result.redated, result.remaining) == (2, 0, 2, 0)
    assert all(abs(t - time.time()) < 120 for t in timestamps(app, ids))  # when they happened, by the server
    status = c.status()
    assert status["clock_offset"] == pytest.approx(-3 * 86400, abs=120)
    assert "3.0 days ahead of the server's" in status["clock_problem"]
    assert status["rejected"] == 0
    c.close()


def test_a_right_clock_is_not_called_wrong(device):
    device.track(USER, "click", "1")
    assert device.flush().remaining == 0
    status = device.status()
    assert abs(status["clock_offset"]) < 60 and status["clock_problem"] is None


def test_ten_years_ahead_the_sync_names_the_device_clock_not_the_server(app, public_key, tmp_path):
    """Before: "bundle expired; the server must republish", at +10 years, on a bundle published today."""
    c = phone(app, public_key, tmp_path / "d.sqlite", offset=10 * 365 * 86400)
    with pytest.raises(SignatureError, match="if it is wrong, set it right"):
        c.sync([USER])
    c.track(USER, "view", "1")
    assert c.flush().redated == 1  # the upload measured the offset
    assert "ahead of the server's" in c.status()["clock_problem"]
    c.close()


def test_with_a_measured_offset_an_expiry_blames_the_clock(home, public_key):
    import json

    from pocketrank.edge_runtime.trust import load_public_key, verify_manifest

    manifest = (home / "bundles" / "1" / "manifest.json").read_bytes()
    signature = (home / "bundles" / "1" / "manifest.sig").read_text().strip()
    expires = json.loads(manifest)["expires_at"]
    key = load_public_key(public_key)
    ahead = expires + 86400 - time.time()
    with pytest.raises(SignatureError, match="looks expired only because the device clock is wrong"):
        verify_manifest(manifest, signature, key, 0, now=time.time() + ahead, clock_offset=-ahead)
    with pytest.raises(SignatureError, match="if the device clock is right, the server must republish"):
        verify_manifest(manifest, signature, key, 0, now=time.time() + ahead, clock_offset=0.0)
