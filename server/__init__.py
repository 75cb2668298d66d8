"""pocketrank server, one package per concept:

    config, home  settings (POCKETRANK_*) and the home layout (store, models, bundles, keys)
    api/          the Flask app, its blueprints, device tokens, operator key and rate limits
    online/       what answers a request: serving, ranker per model version, catalogue, segments,
                  the real-time updater and online/fold (where an event becomes a user vector)
    training/     the torch model, training loop, sequences and splits, offline evaluation
    bundle/       what devices sync: publish, the manifest's model part, item entries, canary variants
    release/      which version is served: model registry, canary rule, shadow mode, hold-out gate
    jobs/         the batch jobs behind the CLI: train/export, retrain, refresh-items, features,
                  rebase, the canary rollout, the quickstart
    monitoring/   CTR/bounce/revenue figures, drift, Prometheus metrics
    stores/       the store contract, SQLite and Redis
    data/         importers and MovieLens
    wsgi, gunicorn_conf  the deployment entry (`gunicorn -c python:pocketrank.server.gunicorn_conf pocketrank.server.wsgi:app`)

The `pocketrank` command is the top-level pocketrank package; research is in lab/ (not shipped).
"""

import os
from pathlib import Path


def default_home() -> Path:
    """Where the server keeps its store, models, bundles and keys ($POCKETRANK_HOME)."""
    return Path(os.environ.get("POCKETRANK_HOME", "var")).resolve()
