"""Helpers for tests and benches that serve several model versions: derived versions and simulated users.

A derived version is a copy of the trained home's model directory with its own item vectors
(server/online/versions.py reads `item_vectors.npz`): the same vectors make a "good" copy, the rows
permuted among items make the broken model of issue 8 (shuffled item vectors).

Simulated users are MovieLens's 943 users. Their click propensity for an item (named by its product
id, as the API answers it) is its item-item cosine affinity to what they rated (the share-weighted
similarity SAR uses): how strongly the people who watched what this user watched also watched this
item. It comes from the ratings, not from any model under test, and it sits at the 50th percentile of
items for a random pick and near the 90th for the trained model's top 10, so a model that ranks well
gets about twice the clicks.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np

from pocketrank.server.online.versions import save_vectors


def derive_version(home: Path, store, name: str, shuffle_seed: int | None = None) -> str:
    """A copy of the store's current model as `name`; with a seed, its item vectors shuffled."""
    current = store.get_meta("current_model")
    ids, vecs = store.item_vectors()
    if shuffle_seed is not None:
        vecs = vecs[np.random.default_rng(shuffle_seed).permutation(len(ids))]
    dst = Path(home) / "models" / name
    shutil.copytree(Path(home) / "models" / current, dst)
    save_vectors(dst, ids, vecs)
    return name


class Tastes:
    """Click propensities of MovieLens users, from the ratings in the store's event log."""

    def __init__(self, store, cap: float = 0.9):
        rows = [(e.event.user_id, e.event.item_id) for e in store.iter_log(0) if e.event.device_id == "movielens"]
        self.users = sorted({u for u, _ in rows}, key=lambda u: int(u) if u.isdigit() else u)
        uid = {u: k for k, u in enumerate(self.users)}
        items = sorted({i for _, i in rows})
        self.iid = {i: k for k, i in enumerate(items)}
        r = np.zeros((len(self.users), len(items)), dtype=np.float32)
        r[[uid[u] for u, _ in rows], [self.iid[i] for _, i in rows]] = 1.0
        norm = np.sqrt(r.sum(axis=0)) + 1e-9
        sim = (r.T @ r) / norm[:, None] / norm[None, :]
        np.fill_diagonal(sim, 0.0)
        self.affinity = np.minimum((r @ sim) / r.sum(axis=1, keepdims=True), cap)
        self.uid = uid
        # The log holds the store's item indexes; the API answers the products' own ids.
        self.index_of = {it.external_id: it.item_id for it in store.items()}

    def p_click(self, user: str, item: str) -> float:
        """The propensity of `user` to click the product the API named `item` (its own id)."""
        k = self.iid.get(self.index_of.get(item))
        return float(self.affinity[self.uid[user], k]) if k is not None else 0.0


def session_events(user: str, body: dict, tastes: Tastes, rng: np.random.Generator, tag: str) -> list[dict]:
    """One session: an impression per served item, then a click on each with the user's propensity;
    each event carries the context the SDK sends back (source and the model version that answered)."""
    t = time.time()  # after the request that served the list, as a real reaction is
    ctx = {"source": "server", "model_version": body["model_version"]}
    out = []
    for it in body["items"]:
        base = {"user_id": user, "device_id": f"d-{user}", "item_id": it["item_id"], "session_id": f"{tag}-{user}",
                "context": ctx}
        out.append({**base, "event_id": f"{tag}-{user}-{it['item_id']}-i", "type": "impression", "timestamp": t})
        if rng.random() < tastes.p_click(user, it["item_id"]):
            out.append({**base, "event_id": f"{tag}-{user}-{it['item_id']}-c", "type": "click", "timestamp": t + 0.01})
    return out


def post_all(api, events: list[dict], chunk: int = 500) -> None:
    for i in range(0, len(events), chunk):
        body = api.post("/v1/events", json={"events": events[i:i + chunk]}).get_json()
        assert body["accepted"] == len(events[i:i + chunk]), body


def simulate_round(api, users: list[str], tastes: Tastes, rng: np.random.Generator, tag: str) -> dict[str, str]:
    """Every user asks for 10 recommendations and reacts; returns the version that answered each."""
    served, events = {}, []
    for u in users:
        resp = api.get(f"/v1/recommendations?user_id={u}&k=10")
        assert resp.status_code == 200, resp.get_data(as_text=True)
        body = resp.get_json()
        served[u] = body["model_version"]
        events += session_events(u, body, tastes, rng, tag)
    post_all(api, events)
    return served
