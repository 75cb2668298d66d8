"""Simulated rollouts on the (SYNTHETIC) marketplace simulator: a feedback loop and deployable policies.

`MarketplaceSimulator` asks a policy for every slate of a day before it reveals any of that day's
events, so a policy cannot react to a click until the next day. `FeedbackSimulator` runs the same
sessions with the same random coins slate by slate in time order and tells the policy each event
as it happens, which is what a real-time user vector, an on-device rerank and a canary need.
Outcomes are drawn exactly as the simulator draws them (its click, cart, purchase and
continuation models and coins), so arms on one seed differ only in what they show.

Policies learn only from logged events: item vectors come from `fit_item_model` (logistic matrix
factorisation in numpy on a warm-up period's impressions and clicks, with the catalogue category
as a content feature, so a new product starts from its category's vector); the simulator's latent
item vectors and tastes are never read by a policy.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from lab import simulator as simmod
from lab.simulator import CATEGORIES, MarketplaceSimulator, SimConfig
from pocketrank.server.release.canary import bucket
from pocketrank.shared.errors import ValidationError
from pocketrank.shared.features import UserState, update_user_state, user_vector
from pocketrank.shared.schemas import Event


@dataclass
class SlateContext:
    user_id: str
    day: int
    session: int  # global session number: the n in the simulator's session id "sim-<seed>-s<n>"
    slate: int
    t: float
    search_category: str | None


class FeedbackSimulator(MarketplaceSimulator):
    """The simulator, run slate by slate in time order with `policy.observe` after every event.

    first_day: days before it are skipped (their sessions are not planned).
    shock: (day, category index, factor): from that day on, the category's products are `factor`
    times as popular: their weight in the popularity feed and their click odds are multiplied.
    conserve: demand moves rather than grows: every other category's click odds are scaled by the
    one f < 1 that keeps the catalogue's mean popularity odds (mean of exp(popularity bias)) as it
    was. Without it, a tripled category only adds clicks, and a stale model cannot lose CTR to it.
    """

    def __init__(self, config: SimConfig = SimConfig(), first_day: int = 0,
                 shock: tuple[int, int, float] | None = None, conserve: bool = False):
        super().__init__(config)
        self.first_day, self.shock, self._shocked, self.conserve = first_day, shock, False, conserve
        self.shock_other_factor = 1.0  # f, once the shock applies with conserve
        self._day_offset: dict[int, int] = {}
        self._n_planned = 0
        self.slate_meta: dict[tuple[int, int], dict] = {}  # (session, slate) -> context the policy gave

    def _apply_shock(self, day: int) -> None:
        if self.shock and not self._shocked and day >= self.shock[0]:
            _, cat, factor = self.shock
            mask = self._item_cat == cat
            self._logw = np.where(mask, self._logw + math.log(factor), self._logw)
            other = 0.0
            if self.conserve:
                odds = np.exp(self._pop_bias)
                f = (odds.sum() - factor * odds[mask].sum()) / odds[~mask].sum()
                if f <= 0:
                    raise ValidationError("shock", f"category {cat} cannot be {factor}x as popular with demand conserved")
                self.shock_other_factor, other = float(f), math.log(f)
            self._pop_bias = np.where(mask, self._pop_bias + math.log(factor), self._pop_bias + other)
            self._shocked = True

    def _plan_day(self, day: int, policy: Any) -> dict[str, Any]:
        self._apply_shock(day)
        self._day_offset[day] = self._n_planned
        if day < self.first_day:
            z = np.zeros(0, dtype=np.int64)
            return {"users": z, "start": z, "kind": z, "pin": z, "cat": z, "slate_ms": np.zeros((0, 5), np.int64),
                    "levels": [], "steps": z}
        if policy is None or not hasattr(policy, "slate"):
            plan = super()._plan_day(day, policy)
            self._n_planned += plan["users"].size
            return plan
        if hasattr(policy, "start_day"):
            policy.start_day(day)
        return self._plan_feedback_day(day, policy)

    def _plan_feedback_day(self, day: int, policy: Any) -> dict[str, Any]:
        # The simulator's own prelude: the same sessions and coins as _plan_day; only the order
        # in which slates are chosen differs (time, not level).
        d = self._day_prelude(day)
        users, S, cat, pin, taste, slate_ms, kind = d.users, d.S, d.cat, d.pin, d.taste, d.slate_ms, d.kind
        M, n_avail = simmod._MAX_SLATES, d.n_avail
        first = self._n_planned
        self._n_planned += S
        rows_by_level = [[] for _ in range(M)]
        out_by_level: list[list[tuple]] = [[] for _ in range(M)]
        buys: dict[int, list[int]] = defaultdict(list)
        heap = [(int(slate_ms[s, 0]), s, 0) for s in range(S)]
        heapq.heapify(heap)
        observe = getattr(policy, "observe", None)
        while heap:
            t_ms, s, j = heapq.heappop(heap)
            uid, n = f"s{users[s] + 1}", first + s
            ctx = SlateContext(uid, day, n, j, t_ms / 1000.0, CATEGORIES[cat[s]] if cat[s] >= 0 else None)
            meta: dict = {}

            def ask(user_id, cands, t, kk, ctx=ctx, meta=meta):
                chosen, info = policy.slate(ctx, cands, kk)
                meta.update(info or {})
                return chosen

            if j == 0 and kind[s] and observe:
                observe(ctx, "search", None)
            slate = self._policy_slates(np.array([s]), users, cat, pin if j == 0 else None, slate_ms[:, j],
                                        n_avail, ask)[0]
            self.slate_meta[(n, j)] = meta
            valid = slate >= 0
            items = np.where(valid, slate, 0)
            aff = self._item_vec[items] @ taste[users[s]]
            click, cart, buy = self._outcomes(items, valid, aff, d.pos_bias, d.u_click[s, j], d.u_cart[s, j],
                                              d.u_buy[s, j])
            rows_by_level[j].append(s)
            out_by_level[j].append((slate, click, cart, buy))
            if observe:
                for q in np.nonzero(valid)[0].tolist():
                    item = int(slate[q]) + 1
                    observe(ctx, "impression", item)
                    if click[q]:
                        observe(ctx, "click", item)
                    if cart[q]:
                        observe(ctx, "add_to_cart", item)
                    if buy[q]:
                        buys[s].append(item)
            go_on = d.u_cont[s, j] < simmod._CONTINUE_P[1 if click.any() else 0]
            if go_on and j + 1 < M:
                heapq.heappush(heap, (int(slate_ms[s, j + 1]), s, j + 1))
            elif observe:
                for item in buys.pop(s, []):  # checkout comes after browsing, as in the simulator
                    observe(ctx, "purchase", item)
        levels = []
        for j in range(M):
            if not rows_by_level[j]:
                break
            rows = np.full(S, -1)
            rows[np.array(rows_by_level[j])] = np.arange(len(rows_by_level[j]))
            sl, cl, ca, bu = (np.stack([o[i] for o in out_by_level[j]]) for i in range(4))
            levels.append((rows, sl, cl, ca, bu))
        n_steps = sum(int(cl.sum() + ca.sum() + bu.sum()) for _, _, cl, ca, bu in levels)
        return {"users": users, "start": d.start, "kind": kind, "pin": pin, "cat": cat,
                "slate_ms": slate_ms, "levels": levels, "steps": d.rt.integers(*simmod._STEP_MS, n_steps)}

    def session_number(self, session_id: str) -> int:
        return int(session_id.rsplit("-s", 1)[1])

    def with_context(self, sessions: Iterator[list[Event]]) -> Iterator[list[Event]]:
        """Attach each slate's context (source, connectivity, model version...) to its events."""
        for events in sessions:
            n, j, seen_imp = self.session_number(events[0].session_id), -1, False
            out = []
            for e in events:
                if e.type == "impression" and not seen_imp:
                    j += 1
                seen_imp = e.type == "impression"
                meta = self.slate_meta.get((n, max(j, 0)), {})
                out.append(replace(e, context=tuple(sorted((k, str(v)) for k, v in meta.items()))) if meta else e)
            yield out


def offline_session(session: int, share: float) -> bool:
    """Whether a session (by its number) has no network in the edge-offline arm: a stable hash."""
    return bucket(str(session), "offline-sessions") < share


# --- learned item vectors --------------------------------------------------------------------

@dataclass
class ItemModel:
    """Item vectors and popularity biases learned from logged events, by item id."""

    vectors: np.ndarray  # (max_id + 1, dim); row 0 unused
    bias: np.ndarray  # (max_id + 1,)
    category_vectors: np.ndarray  # (n_categories, dim): the content part, what a new item starts from
    item_category: np.ndarray  # (max_id + 1,) category index per item id

    def scores(self, user_vec: np.ndarray | None, item_ids: np.ndarray) -> np.ndarray:
        s = self.bias[item_ids].copy()
        if user_vec is not None:
            s += self.vectors[item_ids] @ user_vec
        return s

    def shuffled(self, seed: int = 0) -> ItemModel:
        """A deliberately broken copy: every item gets another item's vector and bias."""
        perm = np.random.default_rng(seed).permutation(self.vectors.shape[0] - 1) + 1
        v, b = self.vectors.copy(), self.bias.copy()
        v[1:], b[1:] = self.vectors[perm], self.bias[perm]
        return ItemModel(v, b, self.category_vectors, self.item_category)


def _scatter(idx: np.ndarray, rows: np.ndarray, n: int) -> np.ndarray:
    """Sum rows into n buckets by idx (np.add.at, but a bincount per column: ~20x faster)."""
    return np.stack([np.bincount(idx, rows[:, d], minlength=n) for d in range(rows.shape[1])], axis=1)


def fit_item_model(events: list[Event], item_category: dict[int, int], n_categories: int, dim: int = 16,
                   steps: int = 150, lr: float = 0.05, l2: float = 1e-4, seed: int = 0,
                   weights: np.ndarray | None = None, category_bias: bool = False) -> ItemModel:
    """Item vectors trained for the way they are served, full-batch Adam in numpy.

    Serving scores an item by b_i + V_i . u with u the fold (weighted mean) of the vectors of the
    items the user engaged with. Training does the same: each impression is scored with u pooled
    from the user's engagements in OTHER sessions (leave-session-out, so a click never explains
    itself), label 1 if it was clicked in its session. V_i = C_cat(i) + R_i: the category vector
    C is shared by a category's items (catalogue content), R is the item's own, regularised
    harder, so a new product starts from its category's vector. Logged events and the catalogue's
    categories are all it reads.

    weights (aligned with events; pocketrank.server.release.holdout.recency_weights): each impression's loss term and
    each click's count in the popularity feature are weighted by its event's weight, so recent
    behaviour dominates; the user folds stay unweighted (serving folds the history unweighted too).
    category_bias: a popularity term per category (lightly regularised) on top of the item's own,
    so a category's shift in click odds is learned from all its items' impressions at once rather
    than item by item against the per-item shrinkage.
    """
    from pocketrank.shared.features import TYPE_WEIGHTS

    clicked = {(e.session_id, e.item_id) for e in events if e.type == "click"}
    sessions = {sid: n for n, sid in enumerate(sorted({e.session_id for e in events}))}
    users = {u: n for n, u in enumerate(sorted({e.user_id for e in events}))}
    wt = np.ones(len(events)) if weights is None else np.asarray(weights, dtype=np.float64)
    if wt.shape != (len(events),):
        raise ValidationError("weights", f"needs one weight per event ({len(events)}), got shape {wt.shape}")
    imp_w = np.array([w for e, w in zip(events, wt) if e.type == "impression"])
    imps = [e for e in events if e.type == "impression"]
    engs = [e for e in events if TYPE_WEIGHTS.get(e.type, 0) > 0 and e.item_id is not None]
    max_id = max(item_category)
    cat = np.zeros(max_id + 1, dtype=np.int64)
    for i, c in item_category.items():
        cat[i] = c
    ii = np.array([e.item_id for e in imps])
    iu = np.array([users[e.user_id] for e in imps])
    isess = np.array([sessions[e.session_id] for e in imps])
    y = np.array([(e.session_id, e.item_id) in clicked for e in imps], dtype=np.float64)
    ej = np.array([e.item_id for e in engs])
    eu = np.array([users[e.user_id] for e in engs])
    es = np.array([sessions[e.session_id] for e in engs])
    ew = np.array([TYPE_WEIGHTS[e.type] for e in engs])
    nu, ns = len(users), len(sessions)
    W = np.bincount(eu, ew, minlength=nu)[iu] - np.bincount(es, ew, minlength=ns)[isess]
    has = W > 1e-9
    Wn = np.where(has, W, 1.0)
    rng = np.random.default_rng(seed)
    # Popularity: b_i = b0 + gamma * log1p(logged clicks) + d_i, d_i shrunk to 0 as if by
    # `prior` impressions, so an item clicked once out of two impressions does not top every list.
    clicks = [(e.item_id, w) for e, w in zip(events, wt) if e.type == "click"]
    pop = np.log1p(np.bincount([i for i, _ in clicks], [w for _, w in clicks], minlength=max_id + 1)[: max_id + 1])
    pop = (pop - pop.mean()) / (pop.std() or 1.0)
    prior = 50.0
    params = {"C": rng.normal(0, 0.3, (n_categories, dim)), "R": np.zeros((max_id + 1, dim)),
              "b": np.zeros(max_id + 1), "b0": np.array([math.log(max(float(y @ imp_w) / max(imp_w.sum(), 1e-12), 1e-3))]),
              "gamma": np.zeros(1), "cb": np.zeros(n_categories)}
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v2 = {k: np.zeros_like(v) for k, v in params.items()}
    n = imp_w.sum()  # the weighted mean loss: with no weights, the plain mean over impressions
    for step in range(1, steps + 1):
        C, R, b = params["C"], params["R"], params["b"]
        V = C[cat] + R
        ev = ew[:, None] * V[ej]
        pool = (_scatter(eu, ev, nu)[iu] - _scatter(es, ev, ns)[isess]) / Wn[:, None] * has[:, None]
        z = params["b0"][0] + params["gamma"][0] * pop[ii] + b[ii] + np.einsum("nd,nd->n", pool, V[ii])
        if category_bias:
            z = z + params["cb"][cat[ii]]
        g = imp_w * (1.0 / (1.0 + np.exp(-z)) - y) / n
        gV = _scatter(ii, g[:, None] * pool, max_id + 1)  # through the scored item
        gp = g[:, None] * V[ii] / Wn[:, None] * has[:, None]  # through the pool, to its engagements
        back = _scatter(iu, gp, nu)[eu] - _scatter(isess, gp, ns)[es]
        gV += _scatter(ej, ew[:, None] * back, max_id + 1)
        grads = {"R": gV + 10 * l2 * R, "C": _scatter(cat, gV, n_categories) + l2 * C,
                 "b": np.bincount(ii, g, minlength=max_id + 1) + prior / n * b,
                 "b0": np.array([g.sum()]), "gamma": np.array([(g * pop[ii]).sum()]),
                 "cb": np.bincount(cat[ii], g, minlength=n_categories) + l2 * params["cb"] if category_bias
                 else np.zeros(n_categories)}
        for key in params:
            m[key] = 0.9 * m[key] + 0.1 * grads[key]
            v2[key] = 0.999 * v2[key] + 0.001 * grads[key] ** 2
            mh, vh = m[key] / (1 - 0.9 ** step), v2[key] / (1 - 0.999 ** step)
            params[key] -= lr * mh / (np.sqrt(vh) + 1e-8)
    vectors = (params["C"][cat] + params["R"]).astype(np.float32)
    bias = (params["b0"][0] + params["gamma"][0] * pop + params["b"] + params["cb"][cat]).astype(np.float32)
    return ItemModel(vectors, bias, params["C"].astype(np.float32), cat)


# --- policies -------------------------------------------------------------------------------

class _Base:
    """Shared bookkeeping: no item twice in a session, click counts for the popularity fallback."""

    name = "base"

    def __init__(self, model: ItemModel | None = None, history: list[Event] = ()):
        self.model = model
        self.clicks: Counter = Counter(e.item_id for e in history if e.type == "click")
        self.shown: dict[int, set[int]] = defaultdict(set)

    def observe(self, ctx: SlateContext, etype: str, item_id: int | None) -> None:
        if etype == "impression":
            self.shown[ctx.session].add(item_id)
        elif etype == "click":
            self.clicks[item_id] += 1

    def start_day(self, day: int) -> None:
        self.shown.clear()

    def _fresh(self, ctx: SlateContext, candidates: list[int]) -> np.ndarray:
        seen = self.shown.get(ctx.session, ())
        return np.array([c for c in candidates if c not in seen], dtype=np.int64)

    def popular(self, ctx: SlateContext, candidates: list[int], k: int) -> list[int]:
        c = self._fresh(ctx, candidates)
        counts = np.array([self.clicks.get(int(i), 0) for i in c], dtype=np.float64)
        return c[np.lexsort((c, -counts))][:k].tolist()

    def top(self, user_vec: np.ndarray | None, cands: np.ndarray, k: int, model: ItemModel | None = None) -> list[int]:
        s = (model or self.model).scores(user_vec, cands)
        return cands[np.argsort(-s, kind="stable")[:k]].tolist()


class PopularPolicy(_Base):
    name = "popular"

    def slate(self, ctx, candidates, k):
        return self.popular(ctx, candidates, k), {"source": "popular", "connectivity": "online"}


class PersonalPolicy(_Base):
    """User vector = the shared fold of learned item vectors. realtime=False: batch-only, the vector
    served today is the one computed from events up to the end of yesterday."""

    def __init__(self, model: ItemModel, history: list[Event] = (), realtime: bool = True,
                 model_version: str = "m1"):
        super().__init__(model, history)
        self.realtime, self.model_version = realtime, model_version
        self.name = "realtime" if realtime else "batch"
        self.state: dict[str, UserState] = {}
        for e in history:
            self._fold(self.state, e.user_id, e.type, e.item_id)
        self.served = dict(self.state)

    def _fold(self, states: dict, user_id: str, etype: str, item_id: int | None) -> None:
        if etype in ("impression", "search") or item_id is None:
            return
        dim = self.model.vectors.shape[1]
        states[user_id] = update_user_state(states.get(user_id) or UserState.empty(dim),
                                            self.model.vectors[item_id], etype)

    def observe(self, ctx, etype, item_id):
        super().observe(ctx, etype, item_id)
        self._fold(self.state, ctx.user_id, etype, item_id)
        if self.realtime:
            self.served[ctx.user_id] = self.state[ctx.user_id] if ctx.user_id in self.state else None

    def start_day(self, day):
        super().start_day(day)
        self.served = dict(self.state)

    def user_vec(self, user_id: str) -> np.ndarray | None:
        st = self.served.get(user_id)
        return user_vector(st) if st is not None and st.w > 0 else None

    def slate(self, ctx, candidates, k):
        uv = self.user_vec(ctx.user_id)
        meta = {"model_version": self.model_version, "connectivity": "online"}
        if uv is None:
            return self.popular(ctx, candidates, k), {**meta, "source": "popular"}
        return self.top(uv, self._fresh(ctx, candidates), k), {**meta, "source": "server"}


class EdgePolicy(PersonalPolicy):
    """Real time online; a share of sessions offline, served by the device.

    At the start of each day the device syncs: it caches the user's top `n_cached` items by the
    synced vector and the `n_popular` most clicked items. Offline, it reranks the cached items
    with its own state (the synced state plus every event it has seen since), with the same
    scorer; it never sees products that arrived after the sync. Offline sessions are picked by
    a stable hash of the session, so the same sessions are offline in every run.
    """

    name = "edge"

    def __init__(self, model, history=(), offline_share: float = 0.3, n_cached: int = 200, n_popular: int = 50,
                 model_version: str = "m1"):
        super().__init__(model, history, realtime=True, model_version=model_version)
        self.offline_share, self.n_cached, self.n_popular = offline_share, n_cached, n_popular
        self.cache: dict[str, np.ndarray] = {}
        self.popular_cache = np.zeros(0, dtype=np.int64)
        self.catalogue = np.zeros(0, dtype=np.int64)

    def offline(self, ctx: SlateContext) -> bool:
        return offline_session(ctx.session, self.offline_share)

    def set_catalogue(self, item_ids: np.ndarray) -> None:
        self.catalogue = np.asarray(item_ids, dtype=np.int64)

    def start_day(self, day):
        super().start_day(day)
        self.cache.clear()  # rebuilt lazily per user from the state synced now
        self._synced = dict(self.state)
        ranked = sorted(self.catalogue.tolist(), key=lambda i: (-self.clicks.get(i, 0), i))
        self.popular_cache = np.array(ranked[: self.n_popular], dtype=np.int64)

    def _cached(self, user_id: str) -> np.ndarray:
        if user_id not in self.cache:
            st = self._synced.get(user_id)
            got = self.popular_cache
            if st is not None and st.w > 0:
                got = np.union1d(self.top(user_vector(st), self.catalogue, self.n_cached), self.popular_cache)
            self.cache[user_id] = got
        return self.cache[user_id]

    def slate(self, ctx, candidates, k):
        if not self.offline(ctx):
            return super().slate(ctx, candidates, k)
        fresh = self._fresh(ctx, candidates)
        cands = fresh[np.isin(fresh, self._cached(ctx.user_id))]
        meta = {"model_version": self.model_version, "connectivity": "offline"}
        st = self.state.get(ctx.user_id)  # the device's own state: synced + everything since
        if st is None or st.w <= 0:
            pop = [i for i in self.popular_cache.tolist() if i in set(cands.tolist())][:k]
            return pop, {**meta, "source": "popular"}
        return self.top(user_vector(st), cands, k), {**meta, "source": "edge"}


class CanaryPolicy(PersonalPolicy):
    """Real time, with a share of users (stable hash of the rollout id) served by a canary model."""

    name = "canary"

    def __init__(self, model, canary_model, history=(), rollout_id: str = "r1", share: float = 0.05,
                 live_version: str = "m1", canary_version: str = "m2"):
        super().__init__(model, history, realtime=True, model_version=live_version)
        self.canary_model, self.rollout_id, self.share = canary_model, rollout_id, share
        self.canary_version = canary_version
        self.canary_state: dict[str, UserState] = {}
        for e in history:
            self._fold_with(self.canary_model, self.canary_state, e.user_id, e.type, e.item_id)
        self.exposed: set[str] = set()  # users ever served the canary model

    def _fold_with(self, model, states, user_id, etype, item_id):
        if etype in ("impression", "search") or item_id is None:
            return
        states[user_id] = update_user_state(states.get(user_id) or UserState.empty(model.vectors.shape[1]),
                                            model.vectors[item_id], etype)

    def observe(self, ctx, etype, item_id):
        super().observe(ctx, etype, item_id)
        self._fold_with(self.canary_model, self.canary_state, ctx.user_id, etype, item_id)

    def slate(self, ctx, candidates, k):
        if self.share > 0 and bucket(ctx.user_id, self.rollout_id) < self.share:
            self.exposed.add(ctx.user_id)
            st = self.canary_state.get(ctx.user_id)
            meta = {"model_version": self.canary_version, "connectivity": "online"}
            if st is None or st.w <= 0:
                return self.popular(ctx, candidates, k), {**meta, "source": "popular"}
            return self.top(user_vector(st), self._fresh(ctx, candidates), k, self.canary_model), {**meta, "source": "server"}
        return super().slate(ctx, candidates, k)


def warmup(config: SimConfig, days: int) -> tuple[MarketplaceSimulator, list[Event]]:
    """The first `days` days under the simulator's own popularity feed: the training log."""
    sim = MarketplaceSimulator(config)
    end = config.start_time + 86_400.0 * days
    out: list[Event] = []
    for sess in sim.sessions():
        if sess[0].timestamp >= end:
            break
        out.extend(sess)
    return sim, out


def item_categories(sim: MarketplaceSimulator) -> dict[int, int]:
    index = {c: i for i, c in enumerate(CATEGORIES)}
    return {it.item_id: index[it.category] for it in sim.items}
