"""Every write to the record change log renews meta records_epoch: the key of the sync answers each
server worker caches (server/bundle/sync_answer.py), so no worker serves a record the log no longer holds."""

import hashlib

from pocketrank.server.stores.base import RecordRow


def test_every_record_log_write_renews_the_epoch(store):
    seen = {store.get_meta("records_epoch")}
    for v in (1, 2, 2):  # the same version written again (a republished record) too
        raw = b"record %d" % v
        store.put_records(v, {"a": RecordRow(v, raw, hashlib.sha256(raw).digest(), b"s" * 64)}, {"a": b"s" * 64})
        epoch = store.get_meta("records_epoch")
        assert epoch not in seen and len(epoch) == 16
        seen.add(epoch)
    store.put_records(3, {}, {"a": b"t" * 64})  # signatures only
    assert store.get_meta("records_epoch") not in seen
