"""How the demo is started: `pocketrank demo`, `python -m pocketrank.demo_app --serve`, and their guards."""

import subprocess
import sys

import pytest
from click.testing import CliRunner

from pocketrank.demo_app.stack import DemoStack


def test_the_server_does_not_import_demo_app():
    code = "import sys, pocketrank.cli, pocketrank.server.api.app; sys.exit('pocketrank.demo_app' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_pocketrank_demo_is_a_command():
    from pocketrank.cli import main

    result = CliRunner().invoke(main, ["demo", "--help"])
    assert result.exit_code == 0 and "device app" in result.output


def test_python_m_demo_app_documents_both_modes():
    out = subprocess.run([sys.executable, "-m", "pocketrank.demo_app", "--help"], capture_output=True, text=True, check=True).stdout
    assert "--serve" in out and "--no-serve" in out


def test_an_unpublished_home_is_refused_with_what_to_do(tmp_path):
    with pytest.raises(SystemExit, match="make demo"):
        DemoStack(tmp_path).start()
