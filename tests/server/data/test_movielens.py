import zipfile

import numpy as np
import pytest

from pocketrank.server.data import movielens
from pocketrank.shared.errors import DataError


def test_the_real_data_set_parses():
    ml = movielens.load()
    assert (ml.n_users, ml.n_items, len(ml.users)) == (943, 1682, 100_000)
    assert np.all(np.diff(ml.timestamps) >= 0), "ratings are sorted by time"
    toy = next(it for it in ml.catalogue if it.item_id == 1)
    assert toy.title == "Toy Story" and toy.year == 1995 and "Comedy" in toy.categories
    assert ml.user_features["1"] == {"age_band": "18-24", "gender": "M", "occupation": "technician"}


def test_cached_files_are_verified(tmp_path):
    dest = movielens.fetch()
    assert movielens._sha256(dest / "ml-100k.inter") == movielens.INTER_SHA256


def test_an_unreachable_registry_is_a_clear_error(tmp_path, monkeypatch):
    # A real pip against a loopback port nothing listens on.
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    with pytest.raises(DataError, match="could not download recbole==1.2.1"):
        movielens.fetch(tmp_path / "ml")
    assert not (tmp_path / "ml" / "ml-100k.inter").exists()


def test_a_wheel_with_other_data_is_refused(tmp_path):
    wheel = tmp_path / "recbole-1.2.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name in movielens.FILES:
            zf.writestr(movielens.MEMBER_DIR + name, "user_id:token\n1\n")
    with pytest.raises(DataError, match="unexpected sha256"):
        movielens.extract_wheel(wheel, tmp_path / "out")
    assert not (tmp_path / "out" / "ml-100k.inter").exists()
