"""Settings come from POCKETRANK_* variables; the README's table lists every one."""

import os
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from pocketrank.server.config import Config, known_variables
from pocketrank.shared.errors import ValidationError

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"


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
                                         ("ANN_MIN_ITEMS", "-1"), ("MAX_PER_CATEGORY", "0"),
                                         ("POPULAR_PENALTY", "-0.5"), ("POPULAR_PENALTY", "nan")])
def test_a_bad_value_names_the_variable(monkeypatch, name, value):
    monkeypatch.setenv(f"POCKETRANK_{name}", value)
    with pytest.raises(ValidationError) as err:
        Config.from_env()
    assert err.value.field == f"POCKETRANK_{name}"


def test_the_readme_table_documents_every_setting():
    table = README.read_text().split("### Settings", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `POCKETRANK_([A-Z_]+)`", table, re.M))
    assert {f.name.upper() for f in fields(Config)} <= documented


@pytest.mark.parametrize("typo, meant", [("POCKETRANK_OPERATR_KEY", "POCKETRANK_OPERATOR_KEY"),
                                         ("POCKETRANK_STOR", "POCKETRANK_STORE"),
                                         ("POCKETRANK_WORKER", "POCKETRANK_WORKERS"),
                                         ("POCKETRANK_REQUIRE_DEVICE_TOKENS", "POCKETRANK_REQUIRE_DEVICE_TOKEN")])
def test_a_misspelt_setting_is_refused_naming_the_closest(monkeypatch, typo, meant):
    monkeypatch.setenv(typo, "1")
    with pytest.raises(ValidationError) as err:
        Config.from_env()
    assert err.value.field == typo and str(err.value).endswith(f"did you mean {meant}?")


def test_an_unknown_setting_with_nothing_close_is_refused(monkeypatch):
    monkeypatch.setenv("POCKETRANK_ZZZ", "1")
    with pytest.raises(ValidationError, match="POCKETRANK_ZZZ: unknown setting; README.md's Settings table"):
        Config.from_env()


def test_the_cli_refuses_a_misspelt_setting_in_one_line(tmp_path):
    env = {**os.environ, "POCKETRANK_OPERATR_KEY": "x" * 20, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "pocketrank", "serve", "--home", str(tmp_path)], env=env,
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [
        "Error: POCKETRANK_OPERATR_KEY: unknown setting; did you mean POCKETRANK_OPERATOR_KEY?"]


def test_every_variable_the_project_reads_or_names_is_known():
    """A POCKETRANK_* name in the code, scripts, deployment files or docs is a Config field or in
    OTHER_VARIABLES, so setting it never trips the unknown-setting check."""
    files = [p for p in REPO.rglob("*") if p.is_file() and ".venv" not in p.parts and ".git" not in p.parts
             and (p.suffix in (".py", ".sh", ".md", ".yaml", ".yml", ".conf", ".cfg", ".toml")
                  or p.name in ("Makefile", "Dockerfile", "run"))]
    named = {m for p in files for m in re.findall(r"POCKETRANK_[A-Z0-9_]*[A-Z0-9]\b(?!\*)",
                                                  p.read_text(encoding="utf-8", errors="replace"))}
    named -= {"POCKETRANK_OPERATR_KEY", "POCKETRANK_STOR", "POCKETRANK_WORKER", "POCKETRANK_ZZZ",
              "POCKETRANK_REQUIRE_DEVICE_TOKENS"}  # this file's typos
    assert "POCKETRANK_BIND" in named and "POCKETRANK_TEST_REDIS_URL" in named
    assert named - set(known_variables()) == set()
