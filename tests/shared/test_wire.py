import numpy as np
import pytest
from hypothesis import given, strategies as st

from shared import wire
from shared.errors import IntegrityError
from shared.features import UserState


def _state(dim=8):
    return UserState(np.arange(dim, dtype=np.float32), 2.5, 7)


def test_candidate_record_round_trip():
    ids = np.array([10, 3, 99], dtype=np.int64)
    blob = wire.pack_candidates(ids, np.array([0.9, 0.5, 0.25]), _state())
    got_ids, scores, state = wire.unpack_candidates(blob)
    assert got_ids.tolist() == [10, 3, 99]
    assert scores.tolist() == [pytest.approx(0.9, abs=1e-3), 0.5, 0.25]
    assert state.w == 2.5 and state.n_events == 7 and state.s.tolist() == list(range(8))


@given(st.lists(st.integers(1, 2**31 - 1), max_size=300), st.integers(1, 128))
def test_candidate_records_round_trip_any_ids(ids, dim):
    ids = np.array(ids, dtype=np.int64)
    blob = wire.pack_candidates(ids, np.linspace(0, 1, len(ids)), UserState.empty(dim))
    assert wire.unpack_candidates(blob)[0].tolist() == ids.tolist()


def test_truncated_or_corrupt_frames_raise_integrity_error():
    blob = wire.pack_candidates(np.array([1, 2]), np.array([0.1, 0.2]), _state())
    raw = wire.decompress(blob)
    for bad in (blob[:-3], b"garbage", wire.compress(raw[:-5]), wire.compress(b"XXXX" + raw[4:])):
        with pytest.raises(IntegrityError):
            wire.unpack_candidates(bad)


def test_vectors_and_state_and_index_round_trip():
    ids, vec = np.array([1, 5]), np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)
    got_ids, got = wire.unpack_vectors(wire.pack_vectors(ids, vec))
    assert got_ids.tolist() == [1, 5] and np.array_equal(got, vec)
    st_ = wire.unpack_state(wire.pack_state(_state(4)))
    assert st_.s.tolist() == [0, 1, 2, 3] and st_.w == 2.5
    digests = {"u1": "a" * 64, "user-2": "b" * 64}
    assert wire.unpack_user_index(wire.pack_user_index(digests)) == digests


def test_check_digest():
    wire.check_digest(b"abc", wire.sha256_hex(b"abc"), 3, "x")
    with pytest.raises(IntegrityError, match="expected 4 bytes"):
        wire.check_digest(b"abc", wire.sha256_hex(b"abc"), 4, "x")
    with pytest.raises(IntegrityError, match="sha256"):
        wire.check_digest(b"abd", wire.sha256_hex(b"abc"), 3, "x")


def test_decompression_bomb_is_refused(monkeypatch):
    monkeypatch.setattr(wire, "MAX_DECOMPRESSED", 1000)
    with pytest.raises(IntegrityError, match="declares"):
        wire.decompress(wire.compress(b"\0" * 5000))
    import zstandard

    undeclared = zstandard.ZstdCompressor(write_content_size=False).compress(b"\0" * 5000)
    with pytest.raises(IntegrityError, match="inflates"):
        wire.decompress(undeclared)
    assert wire.decompress(zstandard.ZstdCompressor(write_content_size=False).compress(b"ok")) == b"ok"


def test_canonical_json_is_stable():
    assert wire.canonical_json({"b": 1, "a": [1, "é"]}) == '{"a":[1,"é"],"b":1}'.encode()


def test_manifest_shape_is_checked():
    with pytest.raises(IntegrityError, match="lacks fields"):
        wire.parse_manifest(b'{"version": 1}')
    with pytest.raises(IntegrityError, match="not JSON"):
        wire.parse_manifest(b"\xff")
