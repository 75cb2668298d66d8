# pocketrank images, one Dockerfile, three stages (docs/deployment.md):
#
#   docker build --target serve -t pocketrank-serve .   # the API (nginx + gunicorn) and `pocketrank updater`:
#                                                       # the serve extra only, exact versions from
#                                                       # requirements/serve.lock; no torch, scipy, matplotlib
#   docker build --target train -t pocketrank-train .   # import, train, export, publish, retrain, canary:
#                                                       # the server extra (torch)
#
# serve: nginx on port 8000 in front of gunicorn on 127.0.0.1:8001 (deploy/start.sh; deploy/nginx.conf says
# why: slow clients). compose.yaml runs both images with Redis. CI does not build the images (no container
# engine runs there); tests/server/test_slow_clients.py runs deploy/start.sh and tests/test_compose.py the
# compose services' commands as plain processes.

# The wheel, built once from this checkout.
FROM python:3.11-slim AS wheel
WORKDIR /src
COPY setup.cfg pyproject.toml MANIFEST.in README.md LICENSE CHANGELOG.md ./
COPY shared ./shared
COPY exporter ./exporter
COPY server ./server
COPY edge_runtime ./edge_runtime
COPY demo_app ./demo_app
COPY pocketrank ./pocketrank
RUN pip install --no-cache-dir 'build>=1.2' && python -m build --wheel -o /dist .

FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    POCKETRANK_HOME=/var/lib/pocketrank
RUN useradd --system --home-dir /var/lib/pocketrank pocketrank \
    && mkdir -p /var/lib/pocketrank && chown pocketrank /var/lib/pocketrank
WORKDIR /app

FROM base AS serve
ENV POCKETRANK_PORT=8000 POCKETRANK_PROXY_HOPS=1
RUN apt-get update && apt-get install -y --no-install-recommends nginx && rm -rf /var/lib/apt/lists/*
# Every dependency pinned and hash-checked (`make lock` writes the file from the serve extra), then
# pocketrank itself without resolving anything again.
COPY requirements/serve.lock /tmp/serve.lock
RUN pip install --require-hashes --no-deps -r /tmp/serve.lock && rm /tmp/serve.lock
COPY --from=wheel /dist /tmp/dist
RUN pip install --no-deps /tmp/dist/pocketrank-*.whl && rm -rf /tmp/dist && pip check \
    && python -c "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) for m in ('torch', 'scipy', 'matplotlib')))"
COPY deploy ./deploy
USER pocketrank
VOLUME ["/var/lib/pocketrank"]
EXPOSE 8000
# Liveness only (the process answers); readiness is /readyz, for the orchestrator (compose.yaml, docs).
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"
CMD ["bash", "deploy/start.sh"]

FROM base AS train
# torch from PyPI (CUDA wheels on Linux, ~2.5 GB); for a CPU-only image pass
#   --build-arg PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG PIP_EXTRA_INDEX_URL=""
COPY --from=wheel /dist /tmp/dist
RUN whl="$(ls /tmp/dist/pocketrank-*.whl)" && pip install "${whl}[server]" && rm -rf /tmp/dist
USER pocketrank
VOLUME ["/var/lib/pocketrank"]
ENTRYPOINT ["pocketrank"]
CMD ["--help"]
