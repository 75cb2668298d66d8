"""compose.yaml and the Dockerfile, checked without a container engine (none runs here or in CI): every
service's command is a real `pocketrank` command with real options, its settings are known names, the
images it names are Dockerfile stages; and the API and updater commands run as plain processes against
a real Redis, with the compose file's settings."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import click
import httpx
import pytest
import yaml

from pocketrank.cli import main
from pocketrank.server.config import check_environment
from tests.factories import free_port
from tests.server.conftest import seed_store

REPO = Path(__file__).resolve().parents[2]
OPERATOR_KEY = "compose-test-operator-key"


def compose() -> dict:
    """compose.yaml with ${NAME:?...} and ${NAME:-default} interpolated as compose does."""
    text = (REPO / "compose.yaml").read_text()
    values = {"POCKETRANK_OPERATOR_KEY": OPERATOR_KEY}
    text = re.sub(r"\$\{(\w+)(?::[?-][^}]*)?\}", lambda m: values[m.group(1)], text)
    return yaml.safe_load(text)


def stages() -> set[str]:
    return set(re.findall(r"^FROM \S+ AS (\w+)$", (REPO / "Dockerfile").read_text(), re.M))


def pocketrank_invocations(service: dict) -> list[list[str]]:
    """Every `pocketrank ...` a service runs: its command, or the pocketrank commands in its shell loop."""
    command, entrypoint = service.get("command"), service.get("entrypoint")
    if entrypoint == ["sh", "-c"]:
        script = command[0]
        return [shlex.split(m) for m in re.findall(r"\bpocketrank\s+([^;|&]+)", script)]
    if command and command[0] == "pocketrank":
        return [command[1:]]
    return []


def parse(args: list[str]) -> click.Command:
    """Resolve `pocketrank ARGS` to its command and parse its options (a UsageError if any is wrong)."""
    cmd: click.Command = main
    words = list(args)
    while isinstance(cmd, click.Group):
        name = words.pop(0)
        sub = cmd.get_command(click.Context(cmd), name)
        assert sub is not None, f"pocketrank has no command {name!r} ({' '.join(args)})"
        cmd = sub
    cmd.make_context(cmd.name or "", words)
    return cmd


def test_every_service_runs_a_real_command_with_known_settings():
    services = compose()["services"]
    assert {"redis", "api", "updater", "retrain"} <= set(services)
    seen = []
    for name, service in services.items():
        for args in pocketrank_invocations(service):
            seen.append(" ".join(args[:1]))
            parse(args)
        env = service.get("environment") or {}
        check_environment(env)  # a misspelt POCKETRANK_* name here would stop the container at start
        if "build" in service:
            assert service["build"]["target"] in stages(), name
        if env.get("POCKETRANK_STORE") == "redis":
            assert env["POCKETRANK_REDIS_URL"].startswith("redis://redis:") and name != "redis"
            assert service["depends_on"]["redis"]["condition"] == "service_healthy"
    assert sorted(seen) == ["retrain", "updater"]
    assert "--if-drift" in services["retrain"]["command"][0] and "sleep 21600" in services["retrain"]["command"][0]
    # The API is the serve image's command, deploy/start.sh (nginx + gunicorn); its readiness is /readyz.
    assert services["api"]["command"] == ["bash", "deploy/start.sh"] and (REPO / "deploy" / "start.sh").exists()
    assert "/readyz" in " ".join(services["api"]["healthcheck"]["test"])
    assert services["api"]["build"]["target"] == services["updater"]["build"]["target"] == "serve"
    assert services["retrain"]["build"]["target"] == "train"


def test_the_serve_image_is_built_from_the_lock_and_checks_liveness():
    dockerfile = (REPO / "Dockerfile").read_text()
    serve = dockerfile.split("AS serve", 1)[1].split("\nFROM ", 1)[0]
    assert "pip install --require-hashes --no-deps -r /tmp/serve.lock" in serve
    assert "/healthz" in re.search(r"^HEALTHCHECK .*$", serve, re.M).group(0)
    lock = (REPO / "requirements" / "serve.lock").read_text()
    pinned = set(re.findall(r"^([a-z0-9_.-]+)==", lock, re.M))
    assert {"flask", "gunicorn", "redis", "onnxruntime", "numpy"} <= pinned
    assert not {"torch", "scipy", "matplotlib", "pyarrow"} & pinned


@pytest.fixture
def backend():
    return "redis"


def _wait(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)


@pytest.mark.slow
def test_the_api_and_updater_services_serve_against_redis(store, store_config, tmp_path):
    if not Path("/usr/sbin/nginx").exists() and not any(
            Path(p, "nginx").exists() for p in os.environ.get("PATH", "").split(os.pathsep)):
        pytest.skip("no nginx (apt-get install nginx; .ci/run installs it)")
    seed_store(store, store_config.home)
    services = compose()["services"]
    port = free_port()

    def env_of(service: str) -> dict[str, str]:
        env = {k: str(v) for k, v in services[service]["environment"].items()}
        # The compose file's settings, with this machine's Redis (db 15 in CI) and a private home and prefix.
        env.update(POCKETRANK_HOME=str(store_config.home), POCKETRANK_REDIS_URL=store_config.redis_url,
                   POCKETRANK_REDIS_PREFIX=store_config.redis_prefix)
        base = {k: v for k, v in os.environ.items() if not k.startswith("POCKETRANK_")}
        return {**base, **env, "PYTHONPATH": str(REPO), "PYTHON": sys.executable}

    api_env = {**env_of("api"), "POCKETRANK_PORT": str(port), "POCKETRANK_UPSTREAM_PORT": str(free_port()),
               "POCKETRANK_RUN_DIR": str(tmp_path / "nginx"), "POCKETRANK_WORKERS": "1"}
    api_log, updater_log = tmp_path / "api.log", tmp_path / "updater.log"
    api = subprocess.Popen(services["api"]["command"], cwd=REPO, env=api_env, stdout=open(api_log, "wb"),
                           stderr=subprocess.STDOUT)
    updater_args = services["updater"]["command"]
    updater = subprocess.Popen([sys.executable, "-m", *updater_args, "--idle-wait", "0.1"], cwd=REPO,
                               env=env_of("updater"), stdout=open(updater_log, "wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(url + "/healthz", api, api_log)
        with httpx.Client(base_url=url, timeout=10) as c:
            event = {"event_id": "compose-1", "user_id": "compose-user", "device_id": "d", "type": "click",
                     "item_id": 7, "timestamp": time.time() - 1}
            assert c.post("/v1/events", json={"events": [event]}).json()["accepted"] == 1
            deadline = time.monotonic() + 30
            while c.get("/v1/users/compose-user").status_code != 200:  # folded by the updater process
                assert updater.poll() is None and time.monotonic() < deadline, updater_log.read_text()[-3000:]
                time.sleep(0.1)
            assert c.get("/v1/users/compose-user").json()["n_events"] == 1
            ready = c.get("/readyz")
    finally:
        for proc in (updater, api):
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
    assert "updater stopped after folding 1 events" in updater_log.read_text()
    # The Redis store answers and the seeded model loads; no bundle is published in this home, so the
    # API is live but not ready, and says what it waits for.
    assert ready.status_code == 503 and ready.json()["missing"] == ["bundle"], ready.text
    assert ready.json()["checks"]["store"] == {"ok": True, "detail": "redis"}
