"""Helpers for tests that put an event the server will refuse into the outbox, as if the app had queued it."""

from pocketrank.edge_runtime.rowsum import event_sum


def reseal(device) -> None:
    """Recompute every queued row's checksum after a test edited its body: the edit stands for what the SDK
    queued, not for damage (damage is what tests/edge_runtime/test_damage.py makes)."""
    conn = device.cache.conn
    rows = conn.execute("SELECT rowid, event_id, user_id, type, body FROM outbox").fetchall()
    conn.executemany("UPDATE outbox SET checksum = ? WHERE rowid = ?", [(event_sum(e, u, t, b), r) for r, e, u, t, b in rows])
