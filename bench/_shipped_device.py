"""Protocol 4 on the shipped path: what a device shows offline, against the server's answer.

Every device here is the real SDK: one EdgeClient per user (its own SQLite file, holding only that user's
list, its items' signed entries and the model files, as a phone would), synced against the home's app
in-process (httpx's WSGI transport), then cut off: `recommend(allow_server=False)` answers from the local
path, the int8 encoder over the history the device holds reranking the cached candidates with the bundle's
ranker (edge_runtime/local.py). Offline events go in through `track()`, as an app logs them.

Fresh cache (`fresh`): inside bench/_shipped.py's run, on the home that ships (trained on every event but
the test item), each test user's device syncs, then answers offline with no event since.

After k offline events (`stale`): a second home, the same split and seed, imports the log without each
eligible user's last max(ks) training events (eligible: at least max(ks) + MIN_LEFT of them) and is trained,
exported and published once; a model never sees the events that happen after its bundle, as in service.
Those held-back events then reach the server through its real-time updater in the log's order, and before
the last k of them the home publishes again and a new device syncs (its cache is k events stale), then
tracks the last k offline and answers. k = 0 (all events in, then publish and sync) is the same model's
fresh row. Beside each: the server's answer with every event (what an online device gets; the same for
every k) and the device's cached list in the server's order without a rerank (the SDK's `cache` answer,
what a device with no local model shows). Truth: each user's held-out test item, as for the server.

Ranks ties as the server and the SDK do (best score first, then item id); nothing is tuned here.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pocketrank.edge_runtime.local import LocalRecommender

K = 10
KS = (5, 20)
MIN_LEFT = 5  # events a stale user's device still syncs before the offline ones


@dataclass
class DeviceAnswer:
    reranked: list[int]  # what recommend(allow_server=False) shows, as item indexes
    source: str  # its Recommendation.source: edge (the encoder's rerank), cache, popular
    cached: list[int]  # the cached list in the server's order with the SDK's rules: a device without a model
    candidates: list[int]  # the cached candidates the device holds for the user
    offline_known: int  # offline events whose product the device holds an entry (a vector) for
    version: int | None  # the bundle version the phone holds


def offline_split(events, k: int, min_left: int = MIN_LEFT):
    """(the log without each eligible user's last k events, {user: those events as (type, product id,
    timestamp), oldest first}). Eligible: at least k + min_left events. Rows keep the log's order, whose
    last row naming a user is their newest event (bench/_shipped.split_tables)."""
    import pyarrow as pa

    users = events.column("user_id").to_pylist()
    rows: dict[str, list[int]] = {}
    for n, u in enumerate(users):
        rows.setdefault(u, []).append(n)
    back = np.zeros(len(users), dtype=bool)
    for r in rows.values():
        if k > 0 and len(r) >= k + min_left:
            back[r[-k:]] = True
    items, types, times = (events.column(c).to_pylist() for c in ("item_id", "type", "timestamp"))
    held: dict[str, list[tuple[str, str, float]]] = {}
    for n in np.flatnonzero(back).tolist():
        held.setdefault(users[n], []).append((types[n], str(items[n]), float(times[n])))
    return events.filter(pa.array(~back)), held


def build_home(root: Path, tables, events, seed: int, epochs: int | None = None, n_users: int = 200):
    """Import `events` into a new home, then train (the sequence model, holdout 1 as bench/_shipped.py),
    export and publish as the CLI runs them. Returns (Home, train seconds)."""
    from pocketrank.server.bundle.publish import publish_job
    from pocketrank.server.data.importer import import_catalogue, import_events
    from pocketrank.server.home import Home
    from pocketrank.server.jobs.train import export_job, train_job

    home = Home(root)
    store = home.store()
    import_catalogue(store, tables.catalogue, progress=False)
    import_events(store, events, progress=False)
    store.put_profiles(tables.user_features)
    store.close()
    t = time.perf_counter()
    train_job(home, kind="sequence", seed=seed, progress=False, holdout=1, epochs=epochs)
    took = time.perf_counter() - t
    export_job(home, n_users=n_users)
    publish_job(home, progress=False)
    return home, took


def server_app(home_root: Path):
    """The server's app on the home, business rules off (as bench/_shipped.py) and no rate limits (one
    bench process stands for many phones)."""
    from bench._shipped import RULES_OFF
    from pocketrank.server.api.app import create_app
    from pocketrank.server.config import Config

    return create_app(Config(home=home_root, sync_rate=0.0, request_rate=0.0, address_rate=0.0, **RULES_OFF))


def phone(app, key: str, db: Path):
    """A new phone (the SDK's EdgeClient on its own database) talking to `app` in-process."""
    import httpx

    from pocketrank.edge_runtime import EdgeClient
    from pocketrank.edge_runtime.transport import Transport

    transport = Transport(client=httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://bench"))
    return EdgeClient(db, key, transport=transport, device_id="bench-phone")


def device_answer(app, key: str, db: Path, user: str, offline: list[tuple[str, str, float]] | tuple = (),
                  k: int = K) -> DeviceAnswer:
    """A new phone for `user`: sync, track `offline` without a network, answer offline."""
    client = phone(app, key, db)
    try:
        client.sync([user])
        for etype, item, ts in offline:
            client.track(user, etype, item, timestamp=ts)
        rec = client.recommend(user, k, allow_server=False)
        cached = _NoModel(client.cache, client.slot, client.max_model_bytes, client.stale_after,
                          client.clock).recommend(user, k)
        index = client.cache.indexes(sorted({i for _, i, _ in offline} | set(rec.item_ids) | set(cached.item_ids)))
        cands = client.cache.packed(user)
        known = sum(1 for _, i, _ in offline if i in index and client.cache.vector(index[i]) is not None)
        return DeviceAnswer([index[i] for i in rec.item_ids], rec.source, [index[i] for i in cached.item_ids],
                            [] if cands is None else cands.ids.tolist(), known, client.cache.snapshot().version)
    finally:
        client.close()


class _NoModel(LocalRecommender):
    """The SDK's local answer without a user vector (its `cache` source): the cached list in the server's
    order under the same rules, what a device with no local model shows."""

    def user_vector(self, snap, user_id):
        return None


def devices(app, key: str, tmp: Path, users: list[str], offline: dict[str, list] | None = None
            ) -> dict[str, DeviceAnswer]:
    """One new phone per user (each its own directory: the database and the model files beside it,
    removed after), in the order given."""
    import shutil

    out = {}
    for n, u in enumerate(users):
        phone = tmp / f"phone-{n}"
        phone.mkdir()
        out[u] = device_answer(app, key, phone / "device.sqlite", u, (offline or {}).get(u, []))
        shutil.rmtree(phone)
    return out


def server_answers(app, users: list[str], k: int = K) -> dict[str, list[int]]:
    """The server's answer per user: Serving.recommend, rules off (server_app)."""
    serving = app.extensions["pocketrank"]
    return {u: [i for i, _ in serving.recommend(u, k).items] for u in users}


def server_pool(app, users: list[str]) -> dict[str, list[int]]:
    """The candidates the server's retrieval takes from the whole catalogue for its ranker (the encoder's
    user vector, the user's consumed products left out), per user."""
    serving = app.extensions["pocketrank"]
    serving.refresh()
    vr = serving.version_ranker(serving.live_version())
    pool = {}
    for u in users:
        ctx = serving.store.user_context(u, serving.catalogue.dim)
        uv = vr.user_vector(ctx)
        pool[u] = [] if uv is None else [int(i) for i in vr.ranker.retrieve(uv, ctx.consumed)]
    return pool


def server_over(app, cached: dict[str, list[int]], k: int = K) -> dict[str, list[int]]:
    """The server's own ranking (fp32 encoder over its records, its ranker) of each user's cached candidates
    only, consumed products left out: where the device's loss comes from, the candidate list or the int8
    encoder over the device's history."""
    serving = app.extensions["pocketrank"]
    serving.refresh()
    vr = serving.version_ranker(serving.live_version())
    out: dict[str, list[int]] = {}
    for u, cands in cached.items():
        ctx = serving.store.user_context(u, serving.catalogue.dim)
        uv = vr.user_vector(ctx)
        ids = np.array([i for i in cands if i not in ctx.consumed], dtype=np.int64)
        if uv is None or not len(ids):
            out[u] = []
            continue
        scores = vr.ranker.score(uv, ids)
        out[u] = ids[np.lexsort((ids, -scores))][:k].tolist()  # best first, ties by id, as the SDK and server
    return out


def ingest(app, held: dict[str, list[tuple[str, str, float]]], start: int, stop: int, index: dict[str, int]) -> int:
    """Events [start, stop) of each user's held-back ones into the server through its real-time updater (as
    POST /v1/events does), each user's in their order. Returns how many."""
    from pocketrank.shared.schemas import Event

    evs = [Event(f"bench-offline-{u}-{j}", u, "bench", etype, ts, index[item])
           for u, rows in held.items() for j, (etype, item, ts) in enumerate(rows) if start <= j < stop]
    updater = app.extensions["pocketrank"].updater
    for a in range(0, len(evs), 2000):
        updater.ingest(evs[a:a + 2000], max_seconds=60.0)
    return len(evs)


def figures(lists: dict[str, list[int]], truth: dict[str, int], pop_pct: dict, n_items: int,
            server: dict[str, list[int]] | None = None) -> dict:
    """bench/_shipped.py's figures, plus the mean top-10 overlap with the server's answer."""
    from bench._shipped import _metrics

    out = _metrics(lists, truth, pop_pct, n_items)
    if server is not None:
        out["overlap@10"] = float(np.mean([len(set(lists[u][:K]) & set(server[u][:K])) / K for u in truth]))
    return out


def _recall(pools: dict[str, list[int]], truth: dict[str, int]) -> float:
    """Share of users whose test item is among their candidates."""
    return float(np.mean([truth[u] in set(pools[u]) for u in truth]))


def _ratio(device: float, server: float) -> float:
    return device / server if server > 0 else float("nan")


def _sources(answers: dict[str, DeviceAnswer]) -> dict[str, int]:
    out: dict[str, int] = {}
    for a in answers.values():
        out[a.source] = out.get(a.source, 0) + 1
    return out


def fresh(home, truth: dict[str, int], served: dict[str, list[int]], pop_pct: dict, n_items: int,
          log=print) -> dict:
    """Every test user's phone synced against the home that ships, answering offline at once."""
    t0 = time.perf_counter()
    app = server_app(home.root)
    key = (home.root / "keys" / "signing.pub").read_text().strip()
    users = sorted(truth)
    with tempfile.TemporaryDirectory(prefix="pocketrank-phones-") as tmp:
        answers = devices(app, key, Path(tmp), users)
    out: dict = {"users": len(users), "sources": _sources(answers),
           "device": figures({u: a.reranked for u, a in answers.items()}, truth, pop_pct, n_items, served),
           "cache": figures({u: a.cached for u, a in answers.items()}, truth, pop_pct, n_items, served),
           "server": figures(served, truth, pop_pct, n_items),
           "candidates_recall": _recall({u: a.candidates for u, a in answers.items()}, truth)}
    out["server_pool_recall"] = _recall(server_pool(app, users), truth)
    out["server_over_cached"] = figures(server_over(app, {u: a.candidates for u, a in answers.items()}), truth,
                                        pop_pct, n_items, served)
    out["ratio"] = _ratio(out["device"]["nDCG@10"], out["server"]["nDCG@10"])
    out["seconds"] = time.perf_counter() - t0
    log(f"    device, fresh cache: nDCG@10 {out['device']['nDCG@10']:.4f} = {out['ratio']:.3f} x the server's "
        f"{out['server']['nDCG@10']:.4f}; top-10 overlap {out['device']['overlap@10']:.3f}; sources "
        f"{out['sources']}; test item in the cached list {out['candidates_recall']:.3f} (server's retrieval "
        f"{out['server_pool_recall']:.3f}); the server's ranking of the cached list "
        f"{out['server_over_cached']['nDCG@10']:.4f}; {out['seconds']:.0f} s")
    return out


def stale(size: str, seed: int, ks: tuple[int, ...] = KS, log=print, epochs: int | None = None,
          users: int | None = None) -> dict:
    """The cache k events stale, for k in `ks` and 0, on one home trained without the last max(ks) events
    of each eligible user (see the module's docstring). `users`: only the first n eligible users (tests)."""
    from bench._shipped import split_tables
    from pocketrank.server.bundle.publish import publish_job

    t0 = time.perf_counter()
    tables, train_events, test_events = split_tables(size, seed, "random", None)
    top = max(ks)
    kept, held = offline_split(train_events, top)
    test_item = dict(zip(test_events.column("user_id").to_pylist(), test_events.column("item_id").to_pylist()))
    eligible = sorted(u for u in held if u in test_item)
    if users is not None:
        eligible = eligible[:users]
        keep = set(eligible)
        held = {u: r for u, r in held.items() if u in keep}
    out: dict = {"users": len(eligible), "users_left_out": len(test_item) - len(eligible), "ks": [0, *sorted(ks)]}
    with tempfile.TemporaryDirectory(prefix="pocketrank-stale-") as tmp:
        if users is not None:  # a test's few users: the others' events would only cost training time
            import pyarrow as pa

            rows = [u in keep for u in kept.column("user_id").to_pylist()]
            kept = kept.filter(pa.array(rows))
        home, out["train_seconds"] = build_home(Path(tmp) / "home", tables, kept, seed, epochs)
        store = home.store()
        index = {it.external_id: it.item_id for it in store.items()}
        truth = {u: index[test_item[u]] for u in eligible}
        app = server_app(home.root)
        key = (home.root / "keys" / "signing.pub").read_text().strip()
        answers: dict[int, dict[str, DeviceAnswer]] = {}
        done = 0
        for k in sorted({0, *ks}, reverse=True):
            stop = top - k
            if stop > done:  # the events up to the last k reach the server, which publishes again
                ingest(app, held, done, stop, index)
                publish_job(home, progress=False)
                done = stop
            offline = {u: held[u][stop:] for u in eligible}
            phones = Path(tmp) / f"phones-{k}"
            phones.mkdir()
            t = time.perf_counter()
            answers[k] = devices(app, key, phones, eligible, offline)
            published = int(store.get_meta("bundle_version", "0") or 0)
            if any(a.version != published for a in answers[k].values()):  # a phone on an older list: not k stale
                raise RuntimeError(f"a phone {k} events stale holds another bundle than version {published}")
            log(f"    {size} seed {seed}: {len(eligible)} phones {k} events stale answered offline "
                f"({_sources(answers[k])}) in {time.perf_counter() - t:.0f} s")
        served = server_answers(app, eligible)
        pool = server_pool(app, eligible)
        over = {k: server_over(app, {u: a.candidates for u, a in ans.items()}) for k, ans in answers.items()}
        from bench._shipped import scoring_inputs

        _, pop_pct, ids = scoring_inputs(store)
        store.close()
    out["server"] = figures(served, truth, pop_pct, len(ids))
    out["server_pool_recall"] = _recall(pool, truth)
    for k, ans in answers.items():
        out[k] = {"device": figures({u: a.reranked for u, a in ans.items()}, truth, pop_pct, len(ids), served),
                  "cache": figures({u: a.cached for u, a in ans.items()}, truth, pop_pct, len(ids), served),
                  "server_over_cached": figures(over[k], truth, pop_pct, len(ids), served),
                  "sources": _sources(ans), "candidates_recall": _recall({u: a.candidates for u, a in ans.items()},
                                                                         truth),
                  "offline_known": sum(a.offline_known for a in ans.values()) / max(k * len(ans), 1) if k else 1.0}
        out[k]["ratio"] = _ratio(out[k]["device"]["nDCG@10"], out["server"]["nDCG@10"])
        log(f"    {size} seed {seed}, {k} offline events: device nDCG@10 {out[k]['device']['nDCG@10']:.4f} "
            f"({out[k]['ratio']:.3f} x the server's {out['server']['nDCG@10']:.4f}), cached list unreranked "
            f"{out[k]['cache']['nDCG@10']:.4f}, the server's ranking of it {out[k]['server_over_cached']['nDCG@10']:.4f}; "
            f"offline events the device holds a vector for "
            f"{out[k]['offline_known']:.3f}")
    out["seconds"] = time.perf_counter() - t0
    return out
