"""`pocketrank device`: the SDK from a terminal, against a real server on loopback."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from pocketrank.cli import main
from tests.faults.liveserver import LiveServer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def run(home, tmp_path, monkeypatch):
    monkeypatch.setenv("POCKETRANK_SYNC_RATE", "0")
    server = LiveServer(home)
    runner = CliRunner()
    base = ["device", "--db", str(tmp_path / "cli.sqlite"), "--server", server.url,
            "--public-key", str(home / "keys" / "signing.pub"), "--device-id", "cli-test"]

    def invoke(*args):
        return runner.invoke(main, [*base, *args])

    yield invoke
    server.close()


def test_sync_recommend_track_flush_status(run):
    assert run("sync", "196").exit_code == 0
    offline = json.loads(run("recommend", "196", "-k", "5", "--offline", "--json").output)
    assert offline["source"] == "edge" and len(offline["item_ids"]) == 5
    clicked = offline["item_ids"][0]
    assert all(isinstance(i, str) for i in offline["item_ids"])  # the products' own ids
    listing = run("recommend", "196", "-k", "5", "--offline", "--exclude", offline["item_ids"][1]).output
    shown = [line.split()[1] for line in listing.splitlines()[1:]]  # rank, product id, score, title
    assert shown[0] == clicked and offline["item_ids"][1] not in shown and len(shown) == 5
    event_id = run("track", "196", "click", str(clicked)).output.strip()
    assert len(event_id) == 32
    after = json.loads(run("recommend", "196", "-k", "5", "--offline", "--json").output)
    assert clicked not in after["item_ids"]
    assert json.loads(run("status", "--json").output)["outbox"] == 1
    flushed = run("flush")
    assert flushed.exit_code == 0 and "acknowledged 1" in flushed.output
    online = run("recommend", "196", "-k", "3")
    assert online.exit_code == 0 and online.output.startswith("source=server")


def test_sync_with_wifi_only_leaves_a_version_that_needs_a_model_pending(run):
    out = run("sync", "--wifi-only", "196")
    # A first sync needs the model too: nothing applied, the reason printed.
    assert out.exit_code == 0 and "bundle v0 (unchanged)" in out.output and "pending: bundle 1 needs" in out.output
    assert "ranker" in out.output
    out = run("sync", "196")
    assert out.exit_code == 0 and "bundle v1 (changed)" in out.output and "ranker" in out.output


def test_errors_are_one_line_and_exit_1(run):
    result = run("recommend", "196", "-k", "0")
    assert result.exit_code == 1 and result.output.strip() == "error: k: must be an integer between 1 and 100"
    bad = run("track", "196", "search")
    assert bad.exit_code == 1 and "query" in bad.output


def test_the_command_works_without_torch_or_flask(tmp_path):
    script = textwrap.dedent("""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "flask", "lab") or name.startswith(
                        ("pocketrank.server", "pocketrank.exporter", "pocketrank.cli", "pocketrank.home")):
                    raise ImportError(name + " is not installed on this device")
        sys.meta_path.insert(0, Block())
        from pocketrank.edge_runtime.cli import device
        device(["--db", sys.argv[1], "track", "u1", "view", "5"], standalone_mode=False)
        device(["--db", sys.argv[1], "status", "--json"], standalone_mode=False)
    """)
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "d.sqlite")], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert '"outbox": 1' in proc.stdout
