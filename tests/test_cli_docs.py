"""The `pocketrank` command, as documented: every command is in the README or docs/*.md, `--version`
prints the one version, and errors are one line (after sqlite-utils' tests/test_docs.py)."""

from __future__ import annotations

import configparser
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import pocketrank
from pocketrank.cli import main

REPO = Path(__file__).resolve().parent.parent
DOCS = "\n".join(p.read_text(encoding="utf-8") for p in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))])


def _commands(group: click.Group, prefix: tuple[str, ...] = ("pocketrank",)):
    """(words, command) for every leaf command under `group`, subgroups walked."""
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, (*prefix, name))
        else:
            yield (*prefix, name), cmd


COMMANDS = dict(_commands(main))


def test_the_walk_sees_every_group():
    groups = {words[1] for words in COMMANDS}
    assert {"import", "canary", "shadow", "device", "train", "publish"} <= groups
    assert len(COMMANDS) >= 25


@pytest.mark.parametrize("words", sorted(COMMANDS), ids=" ".join)
def test_every_command_is_documented(words):
    assert " ".join(words) in DOCS, f"`{' '.join(words)}` is not in README.md or docs/*.md (add it to docs/cli.md)"


@pytest.mark.parametrize("words", sorted(COMMANDS), ids=" ".join)
def test_every_command_has_help(words):
    result = CliRunner().invoke(main, [*words[1:], "--help"])
    assert result.exit_code == 0, result.output
    assert COMMANDS[words].help, f"{' '.join(words)} has no docstring"


def test_documented_commands_exist():
    """A `pocketrank <word>` in docs/cli.md's tables names a real command (no stale entries)."""
    listed = set(re.findall(r"^\| `(pocketrank [a-z -]+?)` \|", (REPO / "docs" / "cli.md").read_text(), re.M))
    assert listed == {" ".join(w) for w in COMMANDS}


def test_version_is_defined_once():
    """pocketrank/__init__.py holds it; setup.cfg reads it from there, the installed metadata and --version agree."""
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(REPO / "setup.cfg")
    assert cfg["metadata"]["version"] == "attr: pocketrank.__version__"
    assert re.fullmatch(r"\d+\.\d+\.\d+", pocketrank.__version__)
    assert pocketrank.__version__ == version("pocketrank")
    assert f"## [{pocketrank.__version__}]" in (REPO / "CHANGELOG.md").read_text()  # every release is recorded
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and result.output == f"pocketrank {pocketrank.__version__}\n"


def test_version_from_the_installed_command():
    out = subprocess.run([sys.executable, "-m", "pocketrank", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"pocketrank {pocketrank.__version__}"


STORE_COMMANDS = ["features", "updater", "canary start", "canary check", "rebase", "shadow start", "refresh-items",
                  "retrain", "import catalogue", "import events", "import users", "import movielens", "train",
                  "export", "publish", "serve"]
PROGRESS_COMMANDS = ["train", "publish", "retrain", "rebase", "canary check", "import catalogue", "import events",
                     "import users", "import movielens"]


def _options(words: str) -> set[str]:
    cmd = COMMANDS[("pocketrank", *words.split())]
    return {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}


@pytest.mark.parametrize("words", STORE_COMMANDS)
def test_commands_that_open_the_store_take_home_and_store(words):
    assert {"--home", "--store"} <= _options(words)


@pytest.mark.parametrize("words", PROGRESS_COMMANDS)
def test_long_jobs_take_no_progress(words):
    assert "--no-progress" in _options(words)


def test_home_has_one_definition():
    homes = [p for cmd in COMMANDS.values() for p in cmd.params if p.name == "home"]
    assert homes and all(p.envvar == "POCKETRANK_HOME" and p.opts == ["--home"] for p in homes)


def test_a_count_of_recommendations_is_k():
    assert {"-k", "--k"} <= _options("recommend")
    for words, cmd in COMMANDS.items():
        if words[1] == "device":
            continue  # edge_runtime/cli.py: `-k` only, its own option set
        for p in cmd.params:
            if "-k" in p.opts or "--k" in p.opts:
                assert set(p.opts) == {"-k", "--k"}, words


@pytest.mark.parametrize("args", [
    ["train"], ["export"], ["publish"], ["retrain"], ["refresh-items"], ["features"], ["rebase", "m1"],
    ["canary", "status"], ["canary", "start", "m1"], ["canary", "check"], ["canary", "register", "m1"],
    ["shadow", "start", "m1"], ["shadow", "stop"], ["import", "events", "{tmp}/e.csv"], ["demo"],
    ["serve"], ["updater"],
])
def test_a_missing_home_is_one_line(tmp_path, args):
    (tmp_path / "e.csv").write_text("user_id,item_id,timestamp\n")
    args = [a.format(tmp=tmp_path) for a in args]
    result = CliRunner().invoke(main, [*args, "--home", str(tmp_path / "nowhere")])
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines() == [result.output.strip()], result.output
    assert result.output.startswith("Error: no pocketrank home at ") and "Traceback" not in result.output
    assert not (tmp_path / "nowhere").exists()  # refused, not created


def test_the_home_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("POCKETRANK_HOME", str(tmp_path / "elsewhere"))
    result = CliRunner().invoke(main, ["export"])
    assert result.exit_code == 1 and f"no pocketrank home at {tmp_path / 'elsewhere'}" in result.output


def test_errors_are_one_line_in_click_style(tmp_path):
    """A PocketrankError from a job becomes `Error: ...` and exit 1, through the group (no per-command try)."""
    result = CliRunner().invoke(main, ["export", "--home", str(tmp_path)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.startswith("Error: ") and len(result.output.strip().splitlines()) == 1, result.output
    result = CliRunner().invoke(main, ["features", "--home", str(tmp_path), "--as-of", "yesterday"])
    assert result.exit_code == 1 and result.output.strip() == "Error: --as-of 'yesterday': write 'now', 'latest' " \
                                                              "or unix seconds"


def test_a_bad_store_setting_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("POCKETRANK_STORE", "nosql")
    result = CliRunner().invoke(main, ["features", "--home", str(tmp_path)])
    assert result.exit_code == 1 and "POCKETRANK_STORE" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(main, ["features", "--home", str(tmp_path), "--store", "sqlite"])
    assert result.exit_code == 0, result.output


def test_no_hand_written_error_handling_left():
    source = (REPO / "pocketrank" / "cli.py").read_text()
    assert "except PocketrankError" not in source.split("class _Group")[1].split("@click.group")[1]
    assert "_fail(" not in source
