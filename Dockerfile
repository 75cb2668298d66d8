# pocketrank server image: nginx on port 8000 in front of gunicorn on 127.0.0.1:8001
# (deploy/start.sh; deploy/nginx.conf says why: slow clients). CI does not build the image (no
# container engine runs there); tests/server/test_slow_clients.py runs deploy/start.sh for real.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    POCKETRANK_HOME=/var/lib/pocketrank POCKETRANK_PORT=8000 POCKETRANK_PROXY_HOPS=1

WORKDIR /app
COPY setup.cfg pyproject.toml README.md ./
COPY shared ./shared
COPY exporter ./exporter
COPY server ./server
COPY edge_runtime ./edge_runtime
COPY demo_app ./demo_app
COPY pocketrank ./pocketrank
COPY deploy ./deploy
RUN apt-get update && apt-get install -y --no-install-recommends nginx && rm -rf /var/lib/apt/lists/* \
    && pip install '.[server]' \
    && useradd --system --home-dir /var/lib/pocketrank pocketrank \
    && mkdir -p /var/lib/pocketrank && chown pocketrank /var/lib/pocketrank

USER pocketrank
VOLUME ["/var/lib/pocketrank"]
EXPOSE 8000
# /readyz: 200 once the store answers and a model and a bundle are loaded, 503 until then (docs/operations.md);
# /healthz is the liveness check (no store access) for an orchestrator's liveness probe.
HEALTHCHECK --interval=30s --timeout=3s --start-period=60s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2)"
CMD ["bash", "deploy/start.sh"]
