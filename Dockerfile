# pocketrank server image. CI does not build it (no container engine runs there);
# tests/server/test_deployment.py starts the same gunicorn command for real.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    POCKETRANK_HOME=/var/lib/pocketrank POCKETRANK_BIND=0.0.0.0:8000

WORKDIR /app
COPY setup.cfg pyproject.toml README.md ./
COPY shared ./shared
COPY exporter ./exporter
COPY server ./server
COPY edge_runtime ./edge_runtime
COPY demo_app ./demo_app
COPY pocketrank ./pocketrank
RUN pip install '.[server]' \
    && useradd --system --home-dir /var/lib/pocketrank pocketrank \
    && mkdir -p /var/lib/pocketrank && chown pocketrank /var/lib/pocketrank

USER pocketrank
VOLUME ["/var/lib/pocketrank"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"
CMD ["gunicorn", "-c", "python:server.gunicorn_conf", "server.wsgi:app"]
