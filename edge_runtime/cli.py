"""`pocketrank device ...`: the SDK from a terminal, one device database standing in for a phone.

Imports only click until a command runs, and never torch or flask, so it works
on an edge install (`python -m pocketrank.edge_runtime.cli ...` where the server package
is absent). Settings come from options or POCKETRANK_* environment variables.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import click


def _public_key(value: str | None) -> str | None:
    """Hex as given, or read from a path; by default the server home's keys/signing.pub, if there."""
    if value and re.fullmatch(r"[0-9a-fA-F]{64}", value.strip()):
        return value.strip()
    candidates = [Path(value)] if value else [Path(os.environ.get("POCKETRANK_HOME", "var")) / "keys" / "signing.pub"]
    for path in candidates:
        if path.is_file():
            return path.read_text().strip()
    if value:
        raise click.BadParameter(f"{value!r} is neither 64 hex characters nor a readable file", param_hint="--public-key")
    return None


class _Device:
    """Opens the EdgeClient on first use, so `--help` stays instant."""

    def __init__(self, **settings):
        self.settings = settings
        self._client = None

    @property
    def client(self):
        if self._client is None:
            from . import EdgeClient

            s = self.settings
            self._client = EdgeClient(s["db"], _public_key(s["public_key"]), base_url=s["server"],
                                      device_id=s["device_id"], latency_budget=s["budget"], token=s["token"])
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def _run(fn):
    """Call fn(); print a PocketrankError as one red line and exit 1, as the server's CLI does."""
    from .errors import PocketrankError

    try:
        return fn()
    except PocketrankError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(1)


def _echo_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2, default=str))


@click.group("device", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), default="device.sqlite", show_default=True,
              envvar="POCKETRANK_DEVICE_DB", help="The device database (its model files go in <db>-artifacts/).")
@click.option("--server", default="http://127.0.0.1:8000", show_default=True, envvar="POCKETRANK_SERVER",
              help="Base URL of the pocketrank server.")
@click.option("--public-key", default=None, envvar="POCKETRANK_PUBLIC_KEY",
              help="The server's signing key (hex, or a path to keys/signing.pub). "
                   "Default: $POCKETRANK_HOME/keys/signing.pub. Needed only to sync.")
@click.option("--device-id", default="cli", show_default=True, envvar="POCKETRANK_DEVICE_ID")
@click.option("--token", default=None, envvar="POCKETRANK_DEVICE_TOKEN", help="Device token, if the server wants one.")
@click.option("--budget", type=float, default=0.150, show_default=True,
              help="Seconds recommend() gives the server before it answers on the device.")
@click.pass_context
def device(ctx, db, server, public_key, device_id, token, budget) -> None:
    """A device from the terminal: sync, recommend, track, flush, status."""
    ctx.obj = _Device(db=db, server=server, public_key=public_key, device_id=device_id, token=token, budget=budget)
    ctx.call_on_close(ctx.obj.close)


@device.command()
@click.argument("users", nargs=-1)
@click.option("--wifi-only", is_flag=True,
              help="Act as an app with wifi_only on a metered network: no new model is downloaded, and a "
                   "version that needs one waits (the held version keeps serving).")
@click.pass_obj
def sync(dev: _Device, users, wifi_only) -> None:
    """Pull the newest signed bundle for USERS (default: every user on this device)."""
    dev.client.wifi_only = wifi_only
    result = _run(lambda: dev.client.sync(list(users) or None, on_wifi=False))
    click.echo(f"bundle v{result.version} ({'changed' if result.changed else 'unchanged'}), "
               f"{result.bytes_downloaded:,} bytes" + (f"; fetched {', '.join(result.artifacts_fetched)}"
                                                      if result.artifacts_fetched else ""))
    if result.deferred:
        click.echo(f"pending: {result.deferred}")
    if result.unknown_users:
        click.echo(f"unknown to the server: {', '.join(result.unknown_users)}")


@device.command()
@click.argument("user")
@click.option("-k", default=10, show_default=True, help="How many items.")
@click.option("--offline", is_flag=True, help="Do not ask the server; answer on the device.")
@click.option("--exclude", multiple=True, help="A product id not to show (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the whole answer as JSON.")
@click.pass_obj
def recommend(dev: _Device, user, k, offline, exclude, as_json) -> None:
    """USER's top K, from the server within the budget, else reranked on the device."""
    rec = _run(lambda: dev.client.recommend(user, k, context={"exclude": list(exclude)} if exclude else None,
                                            allow_server=not offline))
    if as_json:
        _echo_json(rec.to_dict())
        return
    click.echo(f"source={rec.source} model={rec.model_version} candidates=v{rec.candidates_version} "
               f"{rec.latency_ms:.2f} ms" + (" STALE" if rec.stale else "")
               + (f"  (server skipped: {rec.reason})" if rec.reason and not offline else ""))
    for it in rec.items:
        tag = "" if it.source == rec.source else f"  [{it.source}]"
        click.echo(f"{it.rank:3d}. {it.item_id:>7}  {it.score:.4f}  {it.title[:50]:50s} {it.category}{tag}")


@device.command()
@click.argument("user")
@click.argument("type", type=click.Choice(["view", "click", "search", "add_to_cart", "purchase", "impression"]))
@click.argument("item_id", required=False)
@click.option("--query", default=None, help="The search text (for type search).")
@click.pass_obj
def track(dev: _Device, user, type, item_id, query) -> None:
    """Record an event for USER on the product ITEM_ID (the product's own id, as `recommend` prints it; quote
    one with spaces): durable on the device at once, uploaded by `flush`."""
    click.echo(_run(lambda: dev.client.track(user, type, item_id, query=query)))


@device.command()
@click.option("--wait", type=float, default=0.0, show_default=True,
              help="Seconds to keep retrying while the server asks to back off.")
@click.pass_obj
def flush(dev: _Device, wait) -> None:
    """Upload the outbox; each event leaves the device only once the server acknowledged it."""
    r = _run(lambda: dev.client.flush(wait=wait))
    click.echo(f"uploaded {r.sent}, acknowledged {r.acknowledged}, rejected {r.rejected}, remaining {r.remaining}"
               + (f"; {r.error}" if r.error else ""))
    if r.remaining:
        sys.exit(1)


@device.command()
@click.option("--json", "as_json", is_flag=True, help="Print everything as JSON.")
@click.pass_obj
def status(dev: _Device, as_json) -> None:
    """What the device holds: bundle, model, outbox, drops, connectivity."""
    s = _run(dev.client.status)
    if as_json:
        _echo_json(s)
        return
    click.echo(f"bundle v{s['bundle_version']} model {s['model_version']} (schema v{s['schema_version']})")
    click.echo(f"outbox {s['outbox']} events, {s['outbox_bytes']:,} bytes"
               + (" OVER BOUNDS (purchases are never dropped)" if s["outbox_over_bounds"] else "")
               + (f"; dropped {s['dropped']}" if s["dropped"] else ""))
    click.echo(f"server {s['connectivity']}, uploads {s['uploads']}; users {', '.join(s['users']) or '-'}")


if __name__ == "__main__":
    device()
