"""The record change log (rows only when a record changed, signatures per version, compaction) on SQLite and Redis."""

import hashlib

from pocketrank.server.stores.base import RecordRow


def row(version, payload: bytes) -> RecordRow:
    return RecordRow(version, b"frame:" + payload, hashlib.sha256(payload).digest(), bytes([version]) * 64)


def test_records_at_gives_each_users_record_as_of_a_version(store):
    store.put_records(1, {"a": row(1, b"a1"), "b": row(1, b"b1")}, {"a": b"s" * 64, "b": b"t" * 64})
    store.put_records(2, {}, {"a": b"u" * 64, "b": b"v" * 64})  # nothing changed: signatures only
    store.put_records(3, {"a": row(3, b"a3")}, {"a": b"w" * 64, "b": b"x" * 64})
    at2 = store.records_at(2, ["a", "b", "nobody"])
    assert set(at2) == {"a", "b"} and at2["a"].version == 1 and at2["a"].blob == b"frame:a1"
    at3 = store.records_at(3, ["a", "b"])
    assert (at3["a"].version, at3["a"].sha256) == (3, hashlib.sha256(b"a3").digest()) and at3["b"].version == 1
    assert at3["a"].sig == bytes([3]) * 64
    assert store.record_sigs(2, ["a", "b", "nobody"]) == {"a": b"u" * 64, "b": b"v" * 64}
    assert store.record_heads() == {"a": hashlib.sha256(b"a3").digest(), "b": hashlib.sha256(b"b1").digest()}
    assert store.records_at(0, ["a"]) == {}


def test_compaction_keeps_what_cursors_in_the_kept_history_need(store):
    for v in range(1, 6):  # a changes every version, b only in 1
        store.put_records(v, {"a": row(v, b"a%d" % v), **({"b": row(v, b"b")} if v == 1 else {})},
                          {"a": b"s" * 64, "b": b"t" * 64})
    # Cursors >= 4 need only the newest row at or before 4: a@1, a@2 and a@3 go (a cursor of 3 gets a snapshot).
    assert store.compact_records(4) == 3
    assert store.records_at(4, ["a", "b"])["a"].version == 4 and store.records_at(5, ["a"])["a"].version == 5
    assert store.records_at(3, ["a"]) == {}
    assert store.records_at(5, ["b"])["b"].version == 1  # never superseded: kept however old
    assert store.record_sigs(3, ["a"]) == {} and store.record_sigs(4, ["a"]) == {"a": b"s" * 64}
    assert store.compact_records(4) == 0
