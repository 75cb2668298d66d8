import numpy as np
import pytest
from hypothesis import given, strategies as st

from pocketrank.shared import wire
from pocketrank.shared.errors import IntegrityError, ValidationError
from pocketrank.shared.features import UserState


def _state(dim=8):
    return UserState(np.arange(dim, dtype=np.float32), 2.5, 7)


def test_candidate_record_round_trip():
    ids = np.array([10, 3, 99], dtype=np.int64)
    blob = wire.pack_candidates(ids, np.array([0.9, 0.5, 0.25]))
    got_ids, scores = wire.unpack_candidates(blob)
    assert got_ids.tolist() == [10, 3, 99]
    # The ends of the list are exact; inner scores within half a step of (top - bottom) / 31.
    assert scores[0] == np.float32(0.9) and scores[2] == pytest.approx(0.25, abs=1e-6)
    assert abs(scores[1] - 0.5) <= 0.65 / 31 / 2 + 1e-6
    raw = wire.decompress(blob)
    assert raw[:4] == b"PRC2" and len(raw) == 16 + 5 * 3


@given(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=300),
       st.lists(st.floats(-1e6, 1e6), min_size=300, max_size=300), st.integers(2, 256))
def test_candidate_records_round_trip_any_ids_and_scores(ids, raw_scores, levels):
    ids = np.array(ids, dtype=np.int64)
    scores = np.sort(np.array(raw_scores[: len(ids)]))[::-1]
    raw = wire.pack_candidates_raw(ids, scores, levels)
    got_ids, got = wire.unpack_candidates_raw(raw)
    assert got_ids.tolist() == ids.tolist()
    assert np.all(np.diff(got) <= 0)  # the order stays best first
    if len(ids):
        step = np.float32((np.float32(scores[0]) - scores[-1]) / (levels - 1))
        assert np.all(np.abs(got - scores) <= step / 2 + 1e-3 * (1 + np.abs(scores)))


def test_increasing_or_non_finite_scores_are_refused():
    with pytest.raises(ValidationError, match="non-increasing"):
        wire.pack_candidates_raw(np.array([1, 2]), np.array([0.1, 0.2]))
    with pytest.raises(ValidationError, match="finite"):
        wire.pack_candidates_raw(np.array([1, 2]), np.array([np.nan, 0.2]))


def test_a_prc1_record_from_wire_2_still_reads():
    ids, sc = np.array([7, 3]), np.array([0.5, 0.25], dtype="<f2")
    prc1 = (b"PRC1" + (2).to_bytes(4, "little") + ids.astype("<i4").tobytes() + sc.tobytes()
            + (2).to_bytes(2, "little") + np.zeros(2, "<f4").tobytes() + np.zeros(2, "<u4").tobytes())
    got_ids, got = wire.unpack_candidates_raw(prc1)
    assert got_ids.tolist() == [7, 3] and got.tolist() == [0.5, 0.25]


def test_truncated_or_corrupt_frames_raise_integrity_error():
    blob = wire.pack_candidates(np.array([1, 2]), np.array([0.2, 0.1]))
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


def test_record_message_binds_version_user_and_digest():
    sha = bytes(range(32))
    msg = wire.record_message(3, "u:2", sha)
    assert msg == b"PRR1" + (3).to_bytes(4, "little") + bytes([3]) + b"u:2" + sha
    assert len({wire.record_message(3, "u:2", sha), wire.record_message(4, "u:2", sha),
                wire.record_message(3, "u:3", sha)}) == 3
    with pytest.raises(ValidationError):
        wire.record_message(3, "u", sha[:31])


def test_a_delta_rebuilds_the_new_record_from_the_held_one_and_nothing_else():
    ids = np.random.default_rng(0).permutation(50_000)[:200] + 1  # rank order: not sorted
    old = wire.pack_candidates_raw(ids, np.linspace(1, 0, 200))
    ids2 = ids.copy()
    ids2[[5, 105]] = [900, 901]
    new = wire.pack_candidates_raw(ids2, np.linspace(1, 0, 200))
    delta = wire.make_delta(old, new)
    assert wire.apply_delta(old, delta) == new and len(delta) < len(wire.compress(new)) / 10
    # Against another base the back-references copy the wrong bytes: hence the device checks the
    # base's sha256 before, and the signed sha256 of the result after.
    assert wire.apply_delta(bytes(len(old)), delta) != new
    with pytest.raises(IntegrityError, match="above the cap"):
        wire.apply_delta(old, delta, cap=len(new) - 1)


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


# --- PRI2 item entries (wire 5: PRI1 plus the product's own id) ---


@pytest.mark.parametrize("precision,atol", [("f32", 0.0), ("f16", 1e-3), ("i8", 2e-2)])
def test_item_entries_round_trip_in_each_precision(precision, atol):
    vec = np.random.default_rng(1).normal(size=64).astype(np.float32)
    raw = wire.pack_item_entry(1682, vec, "Scream of Stone (Schrei aus Stein) (1991)", "Drama", 3.5, False, precision,
                               external_id="1682")
    got = wire.unpack_item_entry(raw)
    assert (got["item_id"], got["external_id"], got["title"], got["category"], got["price"], got["in_stock"]) == (
        1682, "1682", "Scream of Stone (Schrei aus Stein) (1991)", "Drama", 3.5, False)
    np.testing.assert_allclose(got["vector"], vec, atol=atol * float(np.abs(vec).max()) + 1e-7)
    assert raw[:4] == b"PRI2" and len(raw) == 16 + {"f32": 256, "f16": 128, "i8": 68}[precision] + 5 + 2 + 41 + 5


def test_an_item_entry_carries_a_non_ascii_product_id_whole():
    ext = "Crème brûlée — 東京 ☕ (1995) 𝄞"  # 2-, 3- and 4-byte UTF-8 characters, spaces inside
    raw = wire.pack_item_entry(42, np.ones(4, np.float32), "Crème brûlée", "Desserts > French", 4.5,
                               external_id=ext)
    got = wire.unpack_item_entry(raw)
    assert (got["item_id"], got["external_id"], got["title"], got["category"]) == (
        42, ext, "Crème brûlée", "Desserts > French")
    # Layout: the id follows the vector, before the title: u8 byte length, then the UTF-8 bytes.
    at = wire.ITEM_HEADER.size + 2 * 4
    assert raw[at] == len(ext.encode()) and raw[at + 1 : at + 1 + raw[at]].decode() == ext


def test_an_entry_without_an_external_id_reads_as_the_index_digits():
    raw = wire.pack_item_entry(7, np.ones(4, np.float32), "Red Shoes", "shoes")
    assert wire.unpack_item_entry(raw)["external_id"] == "7"


def test_an_external_id_is_never_cut():
    with pytest.raises(ValidationError) as err:
        wire.pack_item_entry(7, np.ones(4, np.float32), external_id="é" * 128)  # 256 bytes
    assert err.value.field == "external_id"
    raw = wire.pack_item_entry(7, np.ones(4, np.float32), external_id="𝄞" * 63)  # 252 bytes: kept whole
    assert wire.unpack_item_entry(raw)["external_id"] == "𝄞" * 63


def test_long_titles_are_cut_at_a_character_boundary():
    raw = wire.pack_item_entry(1, np.ones(4, np.float32), "é" * 200)
    assert wire.unpack_item_entry(raw)["title"] == "é" * 127


@pytest.mark.parametrize("damage", ["truncated", "trailing", "magic", "wire 4 magic", "precision",
                                    "text past the end", "id not UTF-8"])
def test_damaged_item_entries_are_refused(damage):
    raw = bytearray(wire.pack_item_entry(7, np.ones(4, np.float32), "Red Shoes", "shoes", external_id="RS-7"))
    if damage == "truncated":
        raw = raw[:-3]
    elif damage == "trailing":
        raw += b"\0"
    elif damage == "magic":
        raw[:4] = b"PRX1"
    elif damage == "wire 4 magic":
        raw[:4] = b"PRI1"  # a PRI1 entry is not read as PRI2: the id field would be misread
    elif damage == "id not UTF-8":
        raw[wire.ITEM_HEADER.size + 8 + 1] = 0xFF
    elif damage == "precision":
        raw[8] = 9
    else:
        raw[-len("shoes") - 1] = 200
    with pytest.raises(IntegrityError):
        wire.unpack_item_entry(bytes(raw))


def test_item_messages_bind_model_item_and_digest():
    digest = bytes(range(32))
    msg = wire.item_message("m1", 7, digest)
    assert msg == b"PRIS" + bytes([2]) + b"m1" + (7).to_bytes(4, "little") + digest
    assert msg != wire.item_message("m2", 7, digest) and msg != wire.item_message("m1", 8, digest)
    with pytest.raises(ValidationError):
        wire.item_message("", 7, digest)
    with pytest.raises(ValidationError):
        wire.pack_item_entry(2**31, np.ones(4, np.float32))
