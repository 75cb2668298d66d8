"""`pocketrank refresh-items` end to end on a tiny home: new products' vectors move towards their users."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from pocketrank.cli import main as cli
from pocketrank.server.home import Home
from pocketrank.server.jobs.refresh_items import shrunk_mean
from pocketrank.server.online.catalogue import load_catalogue, provisional_vector
from pocketrank.shared.features import fold_events, user_vector
from pocketrank.shared.schemas import Event
from tests.factories import product
from tests.server.conftest import synthetic_catalogue

N_TRAINED, N_NEW, N_USERS, HISTORY, ENGAGERS = 300, 8, 400, 8, 30


def _world(seed: int = 0):
    """Users with tastes who clicked their favourite trained items; new products, each liked by the
    users closest to its true (unknown) vector: half of them click it, half are held out."""
    rng = np.random.default_rng(seed)
    items, vectors = synthetic_catalogue(N_TRAINED)
    ids = np.array(sorted(vectors))
    mat = np.stack([vectors[i] for i in ids])
    cats = sorted({it.category for it in items})
    centroid = {c: np.mean([vectors[it.item_id] for it in items if it.category == c], axis=0) for c in cats}
    new_items, truth = [], {}
    for n in range(N_NEW):
        item_id, cat = N_TRAINED + 1 + n, cats[n % len(cats)]
        new_items.append(product(item_id, cat, f"{cat} novelty {item_id}", 9.0))
        v = centroid[cat] / np.linalg.norm(centroid[cat]) + 1.2 * rng.normal(size=mat.shape[1]) / np.sqrt(mat.shape[1])
        truth[item_id] = v / np.linalg.norm(v)
    taste = rng.normal(size=(N_USERS, mat.shape[1]))
    taste /= np.linalg.norm(taste, axis=1, keepdims=True)
    history = {f"u{u}": ids[np.argsort(-(mat @ taste[u]))[:HISTORY]].tolist() for u in range(N_USERS)}
    events, held = [], []
    for u, hist in history.items():
        events += [Event(f"{u}-h{k}", u, "d", "click", 1_700_000_000.0 + k, i) for k, i in enumerate(hist)]
    for item_id, v in truth.items():
        fans = np.argsort(-(taste @ v))[:ENGAGERS]
        for r, u in enumerate(fans.tolist()):
            if r % 2 == 0:
                events.append(Event(f"u{u}-n{item_id}", f"u{u}", "d", "click", 1_700_000_100.0 + r, item_id))
            else:
                held.append((f"u{u}", item_id))
    return items, vectors, new_items, events, history, held


@pytest.fixture
def world_home(tmp_path):
    items, vectors, new_items, events, history, held = _world()
    home = Home(tmp_path / "home")
    store = home.store()
    store.put_items(items, vectors)
    cat = load_catalogue(store)
    # as POST /v1/items does: a provisional, content-only vector
    store.put_items(new_items, {it.item_id: provisional_vector(it, cat) for it in new_items},
                    provisional=[it.item_id for it in new_items])
    store.import_events(events)
    return home, history, held


def _mean_rank(store, history, held) -> float:
    """Mean rank (0 = top) of each held-out user's new product among every item, by inner product
    with the user's folded vector, the user's history excluded: what retrieval does."""
    ids, vecs = store.item_vectors()
    by_id = dict(zip(ids.tolist(), vecs))
    ranks = []
    for user, item_id in held:
        uv = user_vector(fold_events([("click", by_id[i]) for i in history[user]], vecs.shape[1]))
        s = vecs @ uv
        s[np.isin(ids, history[user])] = -np.inf
        ranks.append(int(np.sum(s > s[ids == item_id][0])))
    return float(np.mean(ranks))


def test_refresh_items_moves_new_vectors_and_improves_their_held_out_rank(world_home):
    home, history, held = world_home
    store = home.store()
    before_ids, before = store.item_vectors()
    content_rank = _mean_rank(store, history, held)

    out = CliRunner().invoke(cli, ["refresh-items", "--home", str(home.root)])
    assert out.exit_code == 0, out.output
    assert f"refreshed {N_NEW} of {N_NEW} provisional items" in out.output

    ids, after = store.item_vectors()
    assert (ids == before_ids).all()
    moved = np.linalg.norm(after - before, axis=1) > 1e-4
    assert moved[ids > N_TRAINED].all() and not moved[ids <= N_TRAINED].any()  # only the new rows changed
    assert store.provisional_items() == set(range(N_TRAINED + 1, N_TRAINED + N_NEW + 1))
    refreshed_rank = _mean_rank(store, history, held)

    # random vectors of the same length: the floor
    rng = np.random.default_rng(3)
    rand = {int(i): (lambda x: x / np.linalg.norm(x) * np.linalg.norm(after[k]))(rng.normal(size=after.shape[1]))
            for k, i in enumerate(ids) if i > N_TRAINED}
    store.put_items(store.get_items(rand).values(), rand, provisional=rand)
    random_rank = _mean_rank(store, history, held)
    assert refreshed_rank < 0.5 * content_rank and content_rank < random_rank, (refreshed_rank, content_rank, random_rank)


def test_refresh_is_idempotent_and_leaves_unengaged_items_alone(world_home):
    from pocketrank.server.jobs.refresh_items import refresh_items_job

    home, _history, _held = world_home
    store = home.store()
    lonely = product(999, "Books", "Books lonely thing", 5.0)
    content = provisional_vector(lonely, load_catalogue(store))
    store.put_items([lonely], {999: content}, provisional=[999])
    first = refresh_items_job(home)
    _, v1 = store.item_vectors()
    second = refresh_items_job(home)
    _, v2 = store.item_vectors()
    assert np.allclose(v1, v2) and first["refreshed"] == second["refreshed"] == N_NEW
    assert first["items"][999]["engagements"] == 0 and first["unchanged"] == 1
    ids, vecs = store.item_vectors()
    assert np.allclose(vecs[ids == 999][0], content)


def test_shrinkage_pulls_towards_content_with_few_engagements():
    c, u = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    one = shrunk_mean(c, [(u, 1.0)], shrink=2.0)
    many = shrunk_mean(c, [(u, 1.0)] * 50, shrink=2.0)
    assert one[0] > one[1] and many[1] > 10 * many[0]  # one click: still mostly content; fifty: the users
    assert np.linalg.norm(shrunk_mean(c, [(u, 1.0)], 2.0, norm=3.0)) == pytest.approx(3.0)
    assert np.allclose(shrunk_mean(c, [], 2.0), c)
