"""pocketrank.Home, the Python API behind the command: docs/python-api.md's examples run as written, and
the jobs keep the command's rules (a home must exist before it is trained)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import pocketrank
from pocketrank.cli import main
from pocketrank.shared.errors import DataError, ModelError

REPO = Path(__file__).resolve().parent.parent
PAGE = REPO / "docs" / "python-api.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", PAGE.read_text(encoding="utf-8"), re.S)


def test_importing_pocketrank_loads_no_server_code():
    code = "import sys, pocketrank; pocketrank.__version__; print(sorted(m for m in sys.modules if m.startswith(('pocketrank.server', 'server', 'torch'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"


def test_the_page_names_real_methods_and_commands():
    text = PAGE.read_text(encoding="utf-8")
    rows = re.findall(r"^\| `pocketrank ([a-z ]+?)(?: FILE)?` \| `home\.([a-z_]+)\(", text, re.M)
    assert len(rows) == 8
    for command, method in rows:
        assert callable(getattr(pocketrank.Home, method)), method
        group = main
        for word in command.split():
            group = group.commands[word]  # type: ignore[attr-defined]


def test_jobs_refuse_a_home_that_does_not_exist(tmp_path):
    home = pocketrank.Home(tmp_path / "nowhere")
    for job in (home.train, home.export, home.publish, home.retrain):
        with pytest.raises(DataError, match="no pocketrank home at"):
            job()
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.slow
def test_the_pages_examples_run_in_order(tmp_path):
    """Every ```python block of docs/python-api.md, in order, in one interpreter, in an empty directory."""
    script = "\n".join(python_blocks())
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=900,
                          env={**__import__("os").environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "accepted (new):  100,000" in out
    assert re.search(r"^bundle 1 for 943 users$", out, re.M)
    assert re.search(r"^r\S+ (candidate|retired)$", out, re.M)
    assert "2 products; 3 events, 1 rejected" in out
    assert "3 events in the store" in out


def test_settings_are_checked_before_any_data_is_read(tmp_path):
    (tmp_path / "shop").mkdir()
    home = pocketrank.Home(tmp_path / "shop")  # no data: each refusal comes first
    with pytest.raises(ModelError, match="are for the sequence model"):
        home.train(kind="fold", epochs=1, lr_schedule="linear", lr=4e-3)
    with pytest.raises(ModelError, match="lr_schedule must be one of constant, linear"):
        home.train(kind="sequence", tune_trials=20, lr_schedule="Linear")  # before the study, not after it
