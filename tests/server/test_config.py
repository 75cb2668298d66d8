"""Settings come from POCKETRANK_* variables; the README's table lists every one."""

import re
from dataclasses import fields
from pathlib import Path

import pytest

from server.config import Config
from shared.errors import ValidationError

README = Path(__file__).resolve().parents[2] / "README.md"


def test_environment_variables_set_typed_values(monkeypatch, tmp_path):
    monkeypatch.setenv("POCKETRANK_HOME", str(tmp_path))
    monkeypatch.setenv("POCKETRANK_STORE", "redis")
    monkeypatch.setenv("POCKETRANK_EXPOSURE_PENALTY", "0.2")
    monkeypatch.setenv("POCKETRANK_MAX_PER_CATEGORY", "3")
    monkeypatch.setenv("POCKETRANK_PINNED_ITEMS", "12, 40")
    monkeypatch.setenv("POCKETRANK_BOOSTS", "12:1.5,40:2")
    c = Config.from_env(max_k=7)
    assert (c.home, c.store, c.exposure_penalty, c.max_per_category) == (tmp_path, "redis", 0.2, 3)
    assert c.pinned_items == (12, 40) and c.boosts == {12: 1.5, 40: 2.0} and c.max_k == 7
    monkeypatch.setenv("POCKETRANK_MAX_PER_CATEGORY", "off")
    assert Config.from_env().max_per_category is None


@pytest.mark.parametrize("name, value", [("MAX_K", "ten"), ("BOOSTS", "12"), ("STORE", "postgres"),
                                         ("UPDATER", "sometimes"), ("EXPLORE_POSITION", "-1"),
                                         ("ANN_MIN_ITEMS", "-1")])
def test_a_bad_value_names_the_variable(monkeypatch, name, value):
    monkeypatch.setenv(f"POCKETRANK_{name}", value)
    with pytest.raises(ValidationError) as err:
        Config.from_env()
    assert err.value.field == f"POCKETRANK_{name}"


def test_the_readme_table_documents_every_setting():
    table = README.read_text().split("### Settings", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `POCKETRANK_([A-Z_]+)`", table, re.M))
    assert {f.name.upper() for f in fields(Config)} <= documented
