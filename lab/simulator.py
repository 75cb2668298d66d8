"""A seeded, SYNTHETIC marketplace: users, products, sessions and their events.

It supplies what no public log here has: impressions (CTR), sessions (bounce
rate), revenue, and volume for load tests. Never judge model quality on it alone.

    sim = MarketplaceSimulator(SimConfig(n_users=500, n_days=7, seed=1))
    for event in sim.events(policy=my_policy):  # my_policy(user_id, candidates, t, k) -> ids
        ...

Randomness comes from separate per-day streams (sessions, click coins, default
slates, timing), so two policies run on one seed see the same users, sessions
and coins and differ only in what they show: a low-variance simulated A/B test.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from types import SimpleNamespace
from typing import Any

import numpy as np

from pocketrank.shared.errors import ValidationError
from pocketrank.shared.schemas import Event, Item

CATEGORIES = ("Electronics", "Fashion", "Home", "Garden", "Sports", "Toys", "Beauty", "Books", "Grocery",
              "Automotive", "Pets", "Health", "Office", "Baby", "Jewelry", "Tools", "Music", "Outdoors")
AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55+")
GENDERS = ("female", "male")
REGIONS = ("north", "south", "east", "west", "central")

Policy = Callable[[str, "list[int]", float, int], "list[int]"]

DAY_MS = 86_400_000
# Click model: logit = BASE + AFFINITY * cos(user, item) + popularity bias + position bias.
# Tuned so a popularity feed lands near a marketplace-like CTR of a few percent.
_BASE_LOGIT, _AFFINITY, _POP, _POS_DECAY = -3.5, 4.0, 0.3, 0.35
_CART = (-1.8, 2.0, 0.5)      # bias, affinity weight, log-price penalty
_BUY = (-0.3, 1.5, 0.5)        # the same, for a purchase once in the cart
_SEARCH_P, _PRODUCT_SEARCH_P = 0.25, 0.3
_MAX_SLATES = 5
_CONTINUE_P = (0.3, 0.6)      # chance to scroll to another slate: without / with a click
_STEP_MS = (300, 1500)        # gap between a user's actions inside a slate
_STOCK_P = 0.95


@dataclass(frozen=True)
class SimConfig:
    n_users: int = 2000
    n_items: int = 1000
    n_categories: int = 12
    dim: int = 16
    n_days: int = 30
    sessions_per_user_per_day: float = 0.3
    slate_size: int = 10
    new_items_per_day: int = 5
    drift_per_day: float = 0.02
    zipf_a: float = 1.1
    seed: int = 0
    start_time: float = 1_700_000_000.0

    def __post_init__(self) -> None:
        for f in fields(self):
            v, kind = getattr(self, f.name), int if f.type == "int" else (int, float)
            low = 1 if f.name in ("n_users", "n_items", "n_categories", "dim", "n_days", "slate_size") else 0
            if isinstance(v, bool) or not isinstance(v, kind) or not v >= low:  # `not >=` also catches NaN
                raise ValidationError(f.name, f"must be {'an integer' if kind is int else 'a number'} >= {low}")
        if self.n_categories > len(CATEGORIES):
            raise ValidationError("n_categories", f"must be at most {len(CATEGORIES)}")
        if _max_session_ms(self.slate_size) >= DAY_MS:
            raise ValidationError("slate_size", "is too large for a session to fit in a day")


def _slate_gap_min(k: int) -> int:
    # Room for every click and add-to-cart of a slate before the next slate shows.
    return k * (2 * _STEP_MS[1] + 1) + 1_000


def _max_session_ms(k: int) -> int:
    return 5_000 + _MAX_SLATES * (_slate_gap_min(k) + 120_000 + k * _STEP_MS[1])


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _field(event: Any, name: str) -> Any:
    return event.get(name) if isinstance(event, Mapping) else getattr(event, name)


def is_bounce(session_events: Iterable[Any]) -> bool:
    """A session that showed impressions and got no click. Takes Events or event dicts."""
    types = {_field(e, "type") for e in session_events}
    return "impression" in types and "click" not in types


def session_revenue(session_events: Iterable[Any], prices: Mapping[int, float]) -> float:
    """Sum of the prices of the session's purchases; an unpriced item is an error, not zero."""
    bought = [_field(e, "item_id") for e in session_events if _field(e, "type") == "purchase"]
    for item in bought:
        if item not in prices:
            raise ValidationError("item_id", f"item {item} was purchased but has no price; pass every price")
    return float(sum(prices[item] for item in bought))


class MarketplaceSimulator:
    """A synthetic marketplace; see the module docstring."""

    def __init__(self, config: SimConfig = SimConfig()):
        self.config = c = config
        rng = np.random.default_rng([c.seed, 0])
        # Users: the segment's centre (sum of its attributes' centres) shapes taste,
        # so segments differ in what they like and segment-level cold start has signal.
        attrs = (AGE_BANDS, GENDERS, REGIONS)
        seg = np.stack([rng.integers(0, len(a), c.n_users) for a in attrs], axis=1)
        centres = [rng.normal(size=(len(a), c.dim)) for a in attrs]
        seg_centre = _unit(sum(cen[seg[:, i]] for i, cen in enumerate(centres)))
        noise = rng.normal(size=(c.n_users, c.dim)) / np.sqrt(c.dim)
        self._taste0 = _unit(seg_centre + 0.9 * noise).astype(np.float32)
        # Heavy-tailed activity (mean 1): a few users make many sessions, as in real logs.
        self._activity = rng.lognormal(-0.32, 0.8, c.n_users)
        self._users = [{"user_id": f"s{u + 1}",
                        "segment": {"age_band": AGE_BANDS[a], "gender": GENDERS[g], "region": REGIONS[r]}}
                       for u, (a, g, r) in enumerate(seg.tolist())]
        # Items: the initial catalogue, then new_items_per_day arrivals on days 1..n_days-1.
        self._n_total = n = c.n_items + max(0, c.n_days - 1) * c.new_items_per_day
        self._cat_centre = _unit(rng.normal(size=(c.n_categories, c.dim)))
        self._item_cat = rng.integers(0, c.n_categories, n)
        noise = rng.normal(size=(n, c.dim)) / np.sqrt(c.dim)
        self._item_vec = _unit(self._cat_centre[self._item_cat] + 0.8 * noise).astype(np.float32)
        # Zipf popularity by rank; a newcomer draws a rank from the same range, so some
        # new products become hits and most stay in the tail.
        ranks = np.concatenate([rng.permutation(c.n_items) + 1.0, rng.uniform(1, c.n_items, n - c.n_items)])
        self._logw = -c.zipf_a * np.log(ranks)
        self._pop_bias = _POP * (self._logw - self._logw.mean()) / (self._logw.std() or 1.0)
        cat_price = np.exp(rng.normal(3.3, 0.7, c.n_categories))
        self._price = np.maximum(0.99, np.round(cat_price[self._item_cat] * rng.lognormal(0, 0.5, n), 2))
        self._log_price = np.log(self._price / np.median(self._price))
        self._in_stock = rng.random(n) < _STOCK_P
        self._arrival_day = np.concatenate([np.zeros(c.n_items, dtype=np.int64),
                                            1 + np.arange(n - c.n_items) // max(1, c.new_items_per_day)])
        names = [CATEGORIES[x] for x in self._item_cat.tolist()]
        self._items = [Item(i + 1, f"Sim product {i + 1} ({cat})", cat, None, p, s, (cat,)) for i, (cat, p, s)
                       in enumerate(zip(names, self._price.tolist(), self._in_stock.tolist()))]
        # Tastes per day are recomputed on demand; keep as many days as fit in ~64 MB.
        self._tastes: dict[int, np.ndarray] = {}
        self._taste_cache = max(2, (1 << 26) // max(1, self._taste0.nbytes))

    @property
    def items(self) -> list[Item]:
        """Every product that exists at some point, new arrivals included (see arrival_time)."""
        return list(self._items)

    @property
    def users(self) -> list[dict]:
        return self._users

    @property
    def prices(self) -> dict[int, float]:
        return {i + 1: p for i, p in enumerate(self._price.tolist())}

    def arrival_time(self, item_id: int) -> float:
        """Unix time from which the product can be shown (start of its arrival day)."""
        return self.config.start_time + 86_400.0 * int(self._arrival_day[self._item_index(item_id)])

    def true_click_prob(self, user_id: str, item_id: int, t: float) -> float:
        """The simulator's own P(click) for the item in the top slot at time t (no position penalty)."""
        u, i = self._user_index(user_id), self._item_index(item_id)
        day = max(0, int((t - self.config.start_time) // 86_400))
        aff = float(self._taste(day)[u] @ self._item_vec[i])
        return float(_sigmoid(_BASE_LOGIT + _AFFINITY * aff + self._pop_bias[i]))

    def _user_index(self, user_id: str) -> int:
        n, s = self.config.n_users, str(user_id)
        if not (s[:1] == "s" and s[1:].isdigit() and 1 <= int(s[1:]) <= n):
            raise ValidationError("user_id", f"{user_id!r} is not a simulated user (s1..s{n})")
        return int(s[1:]) - 1

    def _item_index(self, item_id: int) -> int:
        if not isinstance(item_id, (int, np.integer)) or isinstance(item_id, bool) or not 1 <= item_id <= self._n_total:
            raise ValidationError("item_id", f"{item_id!r} is not a simulated item (1..{self._n_total})")
        return int(item_id) - 1

    def _taste(self, day: int) -> np.ndarray:
        """User tastes on a day: a renormalised random walk, replayable from any cached day."""
        if day in self._tastes:
            return self._tastes[day]
        start = max((d for d in self._tastes if d < day), default=0)
        x = self._tastes.get(start, self._taste0)
        step = self.config.drift_per_day / np.sqrt(self.config.dim)
        for d in range(start + 1, day + 1):
            g = np.random.default_rng([self.config.seed, 1, d]).normal(size=x.shape)
            x = _unit(x + step * g.astype(np.float32)).astype(np.float32)
        if len(self._tastes) >= self._taste_cache:
            del self._tastes[next(iter(self._tastes))]
        self._tastes[day] = x
        return x

    def sessions(self, policy: Policy | None = None) -> Iterator[list[Event]]:
        """One list of events per session, sessions in order of their start."""
        seed, n_ev, n_sess = self.config.seed, 0, 0
        for day in range(self.config.n_days):
            p = self._plan_day(day, policy)
            levels = [[a.tolist() for a in level] for level in p["levels"]]
            steps = iter(p["steps"].tolist())
            for s, (u, start, kind, pin, cat, slate_ms) in enumerate(zip(*(p[x].tolist() for x in (
                    "users", "start", "kind", "pin", "cat", "slate_ms")))):
                uid, sid = f"s{u + 1}", f"sim-{seed}-s{n_sess}"
                n_sess += 1
                out, buys, cur = [], [], start
                if kind:
                    out.append(("search", start, None, CATEGORIES[cat] if kind == 1 else f"product {pin + 1}"))
                for j, (rows, slates, clicks, carts, bought) in enumerate(levels):
                    r = rows[s]
                    if r < 0:
                        break
                    slate = [x + 1 for x in slates[r] if x >= 0]  # padding is always at the end
                    out.extend(("impression", slate_ms[j] + q, x, None) for q, x in enumerate(slate))
                    cur = slate_ms[j] + len(slate)
                    for q, x in enumerate(slate):
                        if clicks[r][q]:
                            cur += next(steps)
                            out.append(("click", cur, x, None))
                            if carts[r][q]:
                                cur += next(steps)
                                out.append(("add_to_cart", cur, x, None))
                                if bought[r][q]:
                                    buys.append(x)
                for x in buys:  # checkout comes after browsing
                    cur += next(steps)
                    out.append(("purchase", cur, x, None))
                events = [Event(f"sim-{seed}-{n_ev + n}", uid, f"dev-{uid}", etype, ms / 1000.0, item, query, sid)
                          for n, (etype, ms, item, query) in enumerate(out)]
                n_ev += len(events)
                if events:
                    yield events

    def events(self, policy: Policy | None = None) -> Iterator[Event]:
        """Every event, in timestamp order; only overlapping sessions are held in memory."""
        heap: list[tuple[float, int, int, list[Event]]] = []  # (next timestamp, session no, index, events)

        def pop() -> Event:
            _, seq, i, sess = heap[0]
            if i + 1 < len(sess):
                heapq.heapreplace(heap, (sess[i + 1].timestamp, seq, i + 1, sess))
            else:
                heapq.heappop(heap)
            return sess[i]

        for seq, sess in enumerate(self.sessions(policy)):
            while heap and heap[0][0] <= sess[0].timestamp:  # nothing later can come before these
                yield pop()
            heapq.heappush(heap, (sess[0].timestamp, seq, 0, sess))
        while heap:
            yield pop()

    def _day_prelude(self, day: int) -> SimpleNamespace:
        """The day's sessions and every coin, drawn before any slate is chosen.

        Shared by every way of running a day (here, and monitoring's feedback
        simulator), so a policy changes only which items are shown, never who
        comes, when, or the coins their clicks are decided by.
        """
        c, k = self.config, self.config.slate_size
        rs, ro, rslate, rt = (np.random.default_rng([c.seed, tag, day]) for tag in (2, 3, 4, 5))
        taste = self._taste(day)
        n_avail = c.n_items + day * c.new_items_per_day
        base = np.where(self._in_stock[:n_avail], self._logw[:n_avail], -np.inf)
        users = np.repeat(np.arange(c.n_users), rs.poisson(c.sessions_per_user_per_day * self._activity))
        S = users.size
        offset = rs.integers(0, DAY_MS - _max_session_ms(k), S)
        order = np.argsort(offset, kind="stable")
        users, offset = users[order], offset[order]
        start = int(round(c.start_time * 1000)) + day * DAY_MS + offset
        # Searches: a category the user leans to, or a product they already like.
        kind = np.where(rs.random(S) < _SEARCH_P, np.where(rs.random(S) < _PRODUCT_SEARCH_P, 2, 1), 0)
        cat_keys = 4.0 * taste[users] @ self._cat_centre.T.astype(np.float32) + rs.gumbel(size=(S, c.n_categories))
        cat = np.where(kind > 0, cat_keys.argmax(axis=1), -1)
        pin = np.full(S, -1)
        prod = np.nonzero(kind == 2)[0]
        if prod.size:
            aff = taste[users[prod]] @ self._item_vec[:n_avail].T
            pin[prod] = (_AFFINITY * aff + base + rs.gumbel(size=aff.shape)).argmax(axis=1)
            cat[prod] = self._item_cat[pin[prod]]
        gaps = _slate_gap_min(k) + np.minimum(rs.exponential(30_000, (S, _MAX_SLATES)), 120_000).astype(np.int64)
        gaps[:, 0] = np.where(kind > 0, rs.integers(1_000, 5_000, S), 0)
        slate_ms = start[:, None] + np.cumsum(gaps, axis=1)
        # Coins are drawn for every slot up front, so they do not depend on the policy.
        u_click, u_cart, u_buy = (ro.random((S, _MAX_SLATES, k)) for _ in range(3))
        u_cont = ro.random((S, _MAX_SLATES))
        pos_bias = -_POS_DECAY * np.log2(1.0 + np.arange(k))
        return SimpleNamespace(rslate=rslate, rt=rt, taste=taste, n_avail=n_avail, base=base, users=users, S=S,
                               start=start, kind=kind, cat=cat, pin=pin, slate_ms=slate_ms, u_click=u_click,
                               u_cart=u_cart, u_buy=u_buy, u_cont=u_cont, pos_bias=pos_bias)

    def _outcomes(self, items, valid, aff, pos_bias, u_click, u_cart, u_buy):
        """Clicks, carts and buys of shown slots, decided by the pre-drawn coins."""
        p_click = _sigmoid(_BASE_LOGIT + _AFFINITY * aff + self._pop_bias[items] + pos_bias)
        click = valid & (u_click < p_click)
        lp = self._log_price[items]
        cart = click & (u_cart < _sigmoid(_CART[0] + _CART[1] * aff - _CART[2] * lp))
        buy = cart & (u_buy < _sigmoid(_BUY[0] + _BUY[1] * aff - _BUY[2] * lp))
        return click, cart, buy

    def _plan_day(self, day: int, policy: Policy | None) -> dict[str, Any]:
        """Everything random about one day, as arrays; only the assembly into Events is left."""
        d = self._day_prelude(day)
        users, S, cat, pin, taste, slate_ms = d.users, d.S, d.cat, d.pin, d.taste, d.slate_ms
        levels, active = [], np.arange(S)
        for j in range(_MAX_SLATES):
            if active.size == 0:
                break
            if policy is None:
                slates = self._popular_slates(active, cat, pin if j == 0 else None, d.base, d.rslate)
            else:
                slates = self._policy_slates(active, users, cat, pin if j == 0 else None,
                                             slate_ms[:, j], d.n_avail, policy)
            valid = slates >= 0
            items = np.where(valid, slates, 0)
            aff = np.einsum("mkd,md->mk", self._item_vec[items], taste[users[active]])
            click, cart, buy = self._outcomes(items, valid, aff, d.pos_bias, d.u_click[active, j],
                                              d.u_cart[active, j], d.u_buy[active, j])
            rows = np.full(S, -1)
            rows[active] = np.arange(active.size)
            levels.append((rows, slates, click, cart, buy))
            active = active[d.u_cont[active, j] < np.where(click.any(axis=1), _CONTINUE_P[1], _CONTINUE_P[0])]
        n_steps = sum(int(cl.sum() + ca.sum() + bu.sum()) for _, _, cl, ca, bu in levels)
        return {"users": users, "start": d.start, "kind": d.kind, "pin": pin, "cat": cat,
                "slate_ms": slate_ms, "levels": levels, "steps": d.rt.integers(*_STEP_MS, n_steps)}

    def _popular_slates(self, active, cat, pin, base, rng) -> np.ndarray:
        """Popularity-weighted slates without replacement, O(k log n) each: the first k distinct
        of i.i.d. draws are exactly a successive sample; a row short of distinct draws is
        topped up by Gumbel top-k over what is left, which continues the same process."""
        k, n = self.config.slate_size, base.size
        out = np.full((active.size, k), -1)
        w = np.exp(base - base.max()) if np.isfinite(base).any() else np.zeros(n)
        c = cat[active]
        for g in np.unique(c).tolist():
            rows = np.nonzero(c == g)[0]
            wg = w if g < 0 else np.where(self._item_cat[:n] == g, w, 0.0)
            cdf = np.cumsum(wg)
            if cdf[-1] <= 0:
                continue
            draws = np.minimum(np.searchsorted(cdf, rng.random((rows.size, 4 * k)) * cdf[-1], side="right"), n - 1)
            # A pinned product leads; otherwise repeating the first draw changes nothing.
            lead = draws[:, 0] if pin is None else np.where(pin[active[rows]] >= 0, pin[active[rows]], draws[:, 0])
            draws = np.concatenate([lead[:, None], draws], axis=1)
            order = np.argsort(draws, axis=1, kind="stable")
            srt = np.take_along_axis(draws, order, axis=1)
            first = np.ones(draws.shape, dtype=bool)
            np.put_along_axis(first, order[:, 1:], srt[:, 1:] != srt[:, :-1], axis=1)
            keep = first & (np.cumsum(first, axis=1) <= k)
            front = np.argsort(~keep, axis=1, kind="stable")[:, :k]
            got = np.where(np.take_along_axis(keep, front, axis=1), np.take_along_axis(draws, front, axis=1), -1)
            for r in np.nonzero(got[:, -1] < 0)[0].tolist():
                have = got[r][got[r] >= 0]
                with np.errstate(divide="ignore"):
                    keys = np.log(wg) + rng.gumbel(size=n)
                keys[have] = -np.inf
                extra = np.argsort(-keys, kind="stable")[: k - have.size]
                extra = extra[np.isfinite(keys[extra])]
                got[r, have.size:have.size + extra.size] = extra
            out[rows] = got
        return out

    def _policy_slates(self, active, users, cat, pin, t_ms, n_avail, policy) -> np.ndarray:
        """Ask the policy for each slate; search sessions offer only the searched category."""
        k, ok = self.config.slate_size, self._in_stock[:n_avail]
        out = np.full((active.size, k), -1)
        cands: dict[int, tuple[list[int], set[int]]] = {}
        for row, s in enumerate(active.tolist()):
            c = int(cat[s])
            if c not in cands:
                ids = (np.nonzero(ok if c < 0 else ok & (self._item_cat[:n_avail] == c))[0] + 1).tolist()
                cands[c] = (ids, set(ids))
            head = [int(pin[s]) + 1] if pin is not None and pin[s] >= 0 else []
            given = [x for x in cands[c][0] if x not in head] if head else list(cands[c][0])
            chosen = head + (list(policy(f"s{users[s] + 1}", given, float(t_ms[s]) / 1000.0, k - len(head)))
                             if k > len(head) else [])
            if len(chosen) > k or len(set(chosen)) != len(chosen) or not all(
                    isinstance(x, (int, np.integer)) and not isinstance(x, bool) and x in cands[c][1] for x in chosen):
                raise ValidationError("policy", f"must return at most {k - len(head)} distinct item ids taken from "
                                      f"the candidates it was given; got {chosen[len(head):]!r:.200}")
            out[row, :len(chosen)] = np.asarray(chosen, dtype=np.int64) - 1
        return out
