# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint data bench attack clean dist lock

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -U pip
	# torch==2.13.0 (pinned in setup.cfg) is a local CPU build on these machines.
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

data: $(STAMP)
	$(PY) -m pocketrank data fetch

demo: data
	$(PY) -m pocketrank.demo_app

# ruff and mypy, configured in pyproject.toml; `make test` (and so .ci/run) runs it first.
lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/mypy

test: lint data
	$(PY) -m pytest -q

# The edit-test loop: everything but the tests marked slow (browser, fault loops, trainings).
test-fast: data
	$(PY) -m pytest -q -m "not slow"

bench: data
	$(PY) -m bench

# Issue 17's attacker, hostile network and broken phone against the real server and client.
attack: data
	$(PY) -m bench attack

clean:
	rm -rf var .pytest_cache build dist

# The sdist and wheel, checked as PyPI would (twine check --strict); .ci/run builds them on every run.
dist: $(STAMP)
	# A stale pocketrank.egg-info/SOURCES.txt would carry old paths into the sdist.
	rm -rf dist build pocketrank.egg-info
	$(PY) -m build -o dist .
	$(VENV)/bin/twine check --strict dist/*

# requirements/serve.lock: the serving image's exact versions (the serve extra, resolved for Python 3.11
# on Linux, with hashes). Re-run after changing the serve extra; the Dockerfile installs from it.
lock: $(STAMP)
	$(VENV)/bin/uv pip compile --quiet --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
		--extra serve --generate-hashes --no-header --annotation-style line \
		-o requirements/serve.lock setup.cfg

.PHONY: demo-app screenshots
# The clickable phone app and operator page (sets up var/demo first if it has no bundle).
demo-app: data
	$(PY) -m pocketrank.demo_app --serve

# docs/screenshots/*.png for the README, from headless Debian Chromium.
screenshots: data
	$(PY) -m pocketrank.demo_app.screenshots
