"""What `pip install pocketrank[...]` gives: the wheel's contents, the serve extra against what serving
imports, and (slow) clean venvs with one extra each, installed from PyPI like a user's."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
import time
import zipfile
from importlib import metadata
from pathlib import Path

import httpx
import pytest

import pocketrank
from lab.installs import REPO, build_wheel, fresh_install
from pocketrank import extras
from tests.factories import free_port


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("dist"))


def test_the_wheel_carries_the_licence_type_markers_and_the_demo_files(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert {f"pocketrank/{p}py.typed" for p in ("", "server/", "shared/", "exporter/", "edge_runtime/")} <= names
    assert {"pocketrank/demo_app/static/device.js", "pocketrank/demo_app/static/style.css",
            "pocketrank/demo_app/templates/device.html", "pocketrank/server/api/app.py"} <= names
    assert not any("__pycache__" in n for n in names)


def test_the_wheel_installs_one_import_package(wheel):
    """Issue 18: no generic top-level server, shared, exporter, edge_runtime or demo_app in site-packages."""
    tops = {n.split("/")[0] for n in zipfile.ZipFile(wheel).namelist()}
    assert tops == {"pocketrank", f"pocketrank-{pocketrank.__version__}.dist-info"}


def _serving_third_party_modules() -> set[str]:
    """Every third-party top-level module in the import graph of pocketrank.server.wsgi and the updater command,
    read statically (module level and inside functions), except the lazy torch fallback for versions
    exported before item_vectors.npz existed (server/online/versions.py)."""
    project = ("server", "shared", "exporter", "edge_runtime", "pocketrank")  # pocketrank.server, installed
    seen, queue, third = set(), ["pocketrank.server.wsgi", "pocketrank.server.online.serving", "pocketrank.server.stores.redis"], set()
    while queue:
        name = queue.pop()
        if name in seen or name == "pocketrank.server.training.model":
            continue
        seen.add(name)
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            continue
        package = name if spec.origin.endswith("__init__.py") else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(Path(spec.origin).read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                parts = package.split(".")
                base = (".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
                        if node.level else node.module or "")
                targets = [base, *(f"{base}.{a.name}" for a in node.names)]
            for target in targets:
                top = target.split(".")[0]
                if top in project:
                    try:
                        if importlib.util.find_spec(target) is not None:
                            queue.append(target)
                    except ModuleNotFoundError:
                        pass
                elif top not in sys.stdlib_module_names and top != "__future__":
                    third.add(top)
    return third


def test_the_serve_extra_covers_what_serving_imports():
    cfg = (REPO / "setup.cfg").read_text()
    block = cfg.split("\nserve =\n", 1)[1].split("\n# ", 1)[0].split("\nserver =", 1)[0]
    serve = {line.strip().split(">")[0].split("=")[0].lower().replace("_", "-") for line in block.splitlines()
             if line.strip()}
    base = cfg.split("install_requires =\n", 1)[1].split("\n\n", 1)[0]
    base_names = {line.strip().split(">")[0].lower() for line in base.splitlines() if line.strip()}
    providers = metadata.packages_distributions()
    needed = {d.lower().replace("_", "-") for m in _serving_third_party_modules() for d in providers.get(m, [m])}
    assert "torch" not in needed and "scipy" not in needed and "matplotlib" not in needed
    # werkzeug comes with flask, pydantic-core with pydantic
    assert needed - serve - base_names - {"werkzeug", "pydantic-core"} == set()


BLOCK = """
import sys
class Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, Absent())
from pocketrank.cli import main
main(sys.argv[1:], prog_name="pocketrank")
"""


def test_a_missing_dependency_names_the_extra_in_one_line(tmp_path):
    """The fallback when the installed metadata does not tell (a stale editable install): the import fails."""
    (tmp_path / "home").mkdir()
    proc = subprocess.run([sys.executable, "-c", BLOCK.format(blocked=("torch", "scipy")), "train",
                           "--home", str(tmp_path / "home")], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "Error: `pocketrank train` needs the 'server' extra (torch not installed): pip install 'pocketrank[server]'"]
    assert extras.command_extra("serve") == "serve" and extras.command_extra("device") == "edge"


# Clean installs, from PyPI: minutes the first time, seconds from the pip cache in .pytest_cache.

def _install(request, wheel, extra, tmp_path_factory):
    cache = request.config.cache.mkdir("pip") if getattr(request.config, "cache", None) else None
    env = fresh_install(wheel, extra, tmp_path_factory.mktemp(f"venv-{extra}"), pip_cache=cache)
    print(f"\n[{extra}] installed in {env.seconds:.1f} s; site-packages {env.size_bytes() / 1e6:.1f} MB "
          f"({len(env.distributions())} distributions)")
    return env


@pytest.mark.slow
def test_an_edge_only_install_runs_the_device_and_names_the_extra_for_server_commands(request, wheel,
                                                                                       tmp_path_factory, tmp_path):
    env = _install(request, wheel, "edge", tmp_path_factory)
    assert not {"torch", "flask", "scipy", "matplotlib", "pyarrow"} & env.distributions()
    pocketrank = str(env.bin("pocketrank"))
    assert env.run(pocketrank, "--version").stdout.strip() == f"pocketrank {metadata.version('pocketrank')}"
    for command, extra in [("train", "server"), ("export", "server"), ("import", "server"), ("retrain", "server"),
                           ("serve", "serve"), ("updater", "serve")]:
        args = ["import", "movielens"] if command == "import" else [command]
        proc = env.run(pocketrank, *args, "--home", str(tmp_path), cwd=tmp_path)
        assert proc.returncode == 2, (command, proc.stderr)
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert f"pip install 'pocketrank[{extra}]'" in proc.stderr
        assert env.run(pocketrank, *args, "--help").returncode == 0  # help still works
    status = env.run(pocketrank, "device", "--db", str(tmp_path / "phone.sqlite"), "status")
    assert status.returncode == 0, status.stderr
    probe = env.run(str(env.python), "-c", "import pocketrank.edge_runtime as edge_runtime, importlib.util as u; "
                    "print(u.find_spec('torch') is None, u.find_spec('flask') is None)")
    assert probe.stdout.split() == ["True", "True"], probe.stderr


@pytest.mark.slow
def test_a_serve_only_install_serves_a_trained_home_without_torch(request, wheel, tmp_path_factory, home, tmp_path):
    env = _install(request, wheel, "serve", tmp_path_factory)
    assert not {"torch", "scipy", "matplotlib", "pyarrow", "onnx", "optuna"} & env.distributions()
    assert env.run(str(env.python), "-c", "import pocketrank.server.wsgi", env={"POCKETRANK_HOME": str(home)}).returncode == 0
    names = env.run(str(env.python), "-c", "import importlib.util as u; "
                    "print([n for n in ('server', 'shared', 'exporter', 'edge_runtime', 'demo_app') if u.find_spec(n)])",
                    cwd=tmp_path)
    assert names.stdout.strip() == "[]", names.stderr  # only pocketrank.server and its siblings
    train = env.run(str(env.bin("pocketrank")), "train", "--home", str(home))
    assert train.returncode == 2 and "pip install 'pocketrank[server]'" in train.stderr
    port = free_port()
    log = tmp_path / "gunicorn.log"
    proc = subprocess.Popen([str(env.bin("gunicorn")), "-c", "python:pocketrank.server.gunicorn_conf", "pocketrank.server.wsgi:app"],
                            cwd=tmp_path, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            env={"PATH": "/usr/bin:/bin", "POCKETRANK_HOME": str(home), "POCKETRANK_WORKERS": "1",
                                 "POCKETRANK_BIND": f"127.0.0.1:{port}"})
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.2)
        recs = httpx.get(f"http://127.0.0.1:{port}/v1/recommendations", params={"user_id": "196", "k": 5}, timeout=10)
        assert recs.status_code == 200 and len(recs.json()["items"]) == 5, recs.text
    finally:
        proc.terminate()
        proc.wait(30)
