"""docs/sdk.md's examples, run in order against a real server on loopback, as a reader would run them."""

import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.faults.liveserver import LiveServer

DOC = Path(__file__).resolve().parents[2] / "docs" / "sdk.md"


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.fixture
def reader(home, tmp_path, monkeypatch):
    monkeypatch.setenv("POCKETRANK_SYNC_RATE", "0")
    server = LiveServer(home)
    monkeypatch.setenv("POCKETRANK_SERVER", server.url)
    monkeypatch.setenv("POCKETRANK_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    yield server
    server.close()


def test_the_python_examples_run_in_order(reader, capsys):
    code = blocks("python")
    assert len(code) >= 6
    namespace: dict = {}
    for i, block in enumerate(code):
        exec(compile(block, f"{DOC.name} python block {i + 1}", "exec"), namespace)
    out = capsys.readouterr().out
    assert "server" in out.splitlines()[0]  # the quick start got the server's answer


def test_the_terminal_examples_run(reader):
    from pocketrank.cli import main

    lines = [line for block in blocks("sh") for line in block.splitlines() if line.startswith("pocketrank device")]
    assert len(lines) == 5
    runner = CliRunner()
    for line in lines:
        result = runner.invoke(main, shlex.split(line.split("#")[0])[1:], catch_exceptions=False)
        assert result.exit_code == 0, (line, result.output)
    assert '"outbox": 0' in result.output  # status after flush: the click went up
