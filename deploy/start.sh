#!/usr/bin/env bash
# The Docker image's command: gunicorn on a loopback port, nginx in front on the public one
# (deploy/nginx.conf says why). If either process ends, the other is stopped and the container
# exits, so the orchestrator restarts both; SIGTERM is passed on to both.
#
#   POCKETRANK_PORT           public port nginx listens on (8000)
#   POCKETRANK_UPSTREAM_PORT  loopback port gunicorn listens on (8001)
#   POCKETRANK_RUN_DIR        nginx's pid, rendered config and buffers (/tmp/pocketrank-nginx)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
port="${POCKETRANK_PORT:-8000}"
upstream="127.0.0.1:${POCKETRANK_UPSTREAM_PORT:-8001}"
run="${POCKETRANK_RUN_DIR:-/tmp/pocketrank-nginx}"
mkdir -p "$run"
sed -e "s|__LISTEN__|$port|" -e "s|__UPSTREAM__|$upstream|" -e "s|__RUN__|$run|g" \
    "$here/nginx.conf" > "$run/nginx.conf"

# nginx rewrites X-Forwarded-For with the peer's address: the app trusts exactly that one hop.
export POCKETRANK_PROXY_HOPS="${POCKETRANK_PROXY_HOPS:-1}"
POCKETRANK_BIND="$upstream" "${PYTHON:-python}" -m gunicorn -c python:pocketrank.server.gunicorn_conf pocketrank.server.wsgi:app &
app=$!
nginx="$(command -v nginx || echo /usr/sbin/nginx)"  # Debian puts it in sbin, not always on PATH
"$nginx" -e stderr -p "$run" -c "$run/nginx.conf" -g "daemon off;" &
proxy=$!
trap 'kill -TERM $app $proxy 2>/dev/null' TERM INT
status=0
wait -n $app $proxy || status=$?
kill -TERM $app $proxy 2>/dev/null || true
wait $app $proxy 2>/dev/null || true
exit $status
