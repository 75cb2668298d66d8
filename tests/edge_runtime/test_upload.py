"""Event upload against the real Flask app: a 422 with per-event results is an answer, not a failure."""

import pytest

from .queued import reseal

USER = "196"


def _count(device, table: str) -> int:
    return device.cache.conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


@pytest.mark.parametrize("bad_edit, field", [
    # A product the catalogue does not hold:
    ("replace(body, '\"item_id\":\"1\",', '\"item_id\":\"no such product (1999)\",')", "item_id"),
    ("replace(body, '\"type\":\"click\"', '\"type\":\"like\"')", "type"),
])
def test_a_422_acknowledges_the_good_events_and_sets_aside_the_bad_one(device, bad_edit, field):
    for item in ("1", "2", "3"):
        device.track(USER, "click", item)
    device.cache.conn.execute(f"UPDATE outbox SET body = {bad_edit} WHERE body LIKE '%\"item_id\":\"1\",%'")
    reseal(device)
    result = device.flush()
    assert (result.acknowledged, result.rejected, result.remaining) == (2, 1, 0)
    assert result.error is None and result.batches == 1  # one request: no retry loop, no backoff
    assert device.uploads.allow()
    reason = device.cache.conn.execute("SELECT reason FROM rejected").fetchone()[0]
    assert reason.startswith(f"{field}:")
    assert _count(device, "outbox") == 0 and _count(device, "rejected") == 1
    again = device.flush()  # nothing is left to send, and the rejected event is not resent
    assert (again.sent, again.remaining) == (0, 0)


def test_a_whole_batch_refused_with_a_400_stays_queued_and_backs_off(device, app):
    device.track(USER, "click", 1)
    config = app.config["POCKETRANK"]
    limit, config.max_events_per_batch = config.max_events_per_batch, 0  # the server now refuses any batch
    try:
        result = device.flush()
    finally:
        config.max_events_per_batch = limit
    assert result.acknowledged == 0 and result.remaining == 1 and "400" in result.error
    assert not device.uploads.allow()
    assert device.flush(wait=10.0).acknowledged == 1  # after the backoff it goes through
