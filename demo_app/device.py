"""The phone: one EdgeClient on its own thread, and the log of what this session did.

An app talks to its SDK from one worker thread (the SDK's SQLite connection
may belong to the thread that opened it), so every call into the EdgeClient
goes through a one-worker executor, whichever web request asked for it. A background tick plays the app's upload job: when
events wait in the outbox and the connectivity policy allows, it flushes them.
Everything the page and the operator view show comes from here: the SDK's own
answers and what this session measured, never invented figures. Products are
named by their own string ids (MovieLens's are "1".."1682"), as the SDK names them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pocketrank.edge_runtime import EdgeClient, PocketrankError
from pocketrank.shared.schemas import check_item_id

SOURCE_LABELS = {"server": "server", "edge": "on-device rerank", "cache": "cache", "popular": "popular"}


class Device:
    def __init__(self, db_path: Path | str, public_key: str, base_url: str, users: list[str],
                 device_id: str = "demo-phone", latency_budget: float = 0.25, k: int = 10,
                 tick: float = 1.0, traffic=None):
        self.users = list(users)
        self.k = k
        self.device_id = device_id
        self.tick = tick
        self._traffic: Callable[[], dict] = traffic or (lambda: {})  # the proxy's byte counters, sampled each tick
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="device")
        self.client: EdgeClient = self._run(EdgeClient, db_path, public_key, base_url=base_url,
                                            device_id=device_id, latency_budget=latency_budget)
        # Events carry where they happened (list source, model) when the SDK can send it.
        self.started_at = time.time()
        self._lock = threading.Lock()
        self.lists: list[dict] = []
        self.events: list[dict] = []
        self.flushes: list[dict] = []
        self.syncs: list[dict] = []
        self.samples: list[dict] = []
        self.notes: list[dict] = []  # the activity log the page shows
        self._status: dict = {}
        self._pending: Future | None = None
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    # --- plumbing ---

    def _run(self, fn, *args, **kwargs):
        return self._pool.submit(fn, *args, **kwargs).result()

    def note(self, kind: str, text: str) -> None:
        with self._lock:
            self.notes.append({"t": time.time(), "kind": kind, "text": text})
            del self.notes[:-200]

    def _track(self, user_id: str, type: str, item_id: str | None = None, query: str | None = None,
               context: dict | None = None) -> str:
        return self.client.track(user_id, type, item_id, query=query, context=context)

    def _refresh_status(self) -> dict:
        status = self.client.status()
        with self._lock:
            self._status = status
        return status

    def start(self) -> Device:
        """First sync for the demo users, then the background tick."""
        self.sync()
        self._ticker = threading.Thread(target=self._tick_loop, name="device-tick", daemon=True)
        self._ticker.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._ticker:
            self._ticker.join(timeout=5)
        self._run(self.client.close)
        self._pool.shutdown(wait=True)

    # --- what the page asks for ---

    def sync(self) -> dict:
        return self._run(self._sync)

    def _sync(self) -> dict:
        start = time.perf_counter()
        record: dict[str, Any] = {"t": time.time(), "version": None, "changed": False, "bytes": 0, "error": None}
        try:
            res = self.client.sync(self.users)
            record.update(version=res.version, changed=res.changed, bytes=res.bytes_downloaded,
                          artifacts=res.artifacts_fetched)
            self.note("sync", f"sync: bundle v{res.version} "
                       + (f"applied, {res.bytes_downloaded:,} B" if res.changed else "unchanged (304)"))
        except PocketrankError as exc:
            record["error"] = str(exc)
            self.note("error", f"sync failed: {_short(exc)}")
        record["ms"] = (time.perf_counter() - start) * 1000
        with self._lock:
            self.syncs.append(record)
        self._refresh_status()
        return record

    def feed(self, user_id: str) -> dict:
        return self._run(self._feed, user_id)

    def _feed(self, user_id: str) -> dict:
        rec = self.client.recommend(user_id, self.k)
        meta = self.client.cache.products(rec.item_ids)  # by the products' own ids; for a price the answer lacks
        now = time.time()
        with self._lock:
            list_id = len(self.lists) + 1
        items = [{"item_id": it.item_id, "rank": it.rank, "title": it.title, "category": it.category,
                  "score": round(it.score, 4),
                  "price": round(it.price if it.price is not None else meta.get(it.item_id, {}).get("price", 0.0), 2)}
                 for it in rec.items]
        shown = {"list_id": list_id, "t": now, "user_id": user_id, "source": rec.source,
                 "source_label": SOURCE_LABELS.get(rec.source, rec.source), "model_version": rec.model_version,
                 "candidates_version": rec.candidates_version, "latency_ms": round(rec.latency_ms, 2),
                 "stale": rec.stale, "reason": rec.reason, "items": items}
        # The list on screen is the impressions: each is tracked, so CTR has a denominator.
        context = {"source": rec.source, **({"model_version": rec.model_version} if rec.model_version else {})}
        impressions = [self._track(user_id, "impression", it["item_id"], context=context) for it in items]
        with self._lock:
            self.lists.append({**shown, "item_ids": [it["item_id"] for it in items],
                               "prices": {it["item_id"]: it["price"] for it in items}})
            self.events.extend({"event_id": eid, "t": now, "user_id": user_id, "type": "impression",
                                "item_id": it["item_id"], "list_id": list_id, "source": rec.source, "price": 0.0}
                               for eid, it in zip(impressions, items))
        self._refresh_status()
        return {**shown, "impression_ids": impressions}

    def act(self, user_id: str, type: str, item_id: str | None = None, query: str | None = None,
            list_id: int | None = None) -> dict:
        return self._run(self._act, user_id, type, item_id, query, list_id)

    def _act(self, user_id, type, item_id, query, list_id) -> dict:
        with self._lock:
            shown = next((lst for lst in reversed(self.lists) if lst["list_id"] == list_id), None)
        context = {"source": shown["source"]} if shown else None
        event_id = self._track(user_id, type, item_id, query=query, context=context)
        price = 0.0
        if item_id is not None:
            item_id = check_item_id(item_id)  # as the SDK logged it (track() validated it): the product's own id
            price = (shown or {}).get("prices", {}).get(item_id)
            if price is None:
                price = self.client.cache.products([item_id]).get(item_id, {}).get("price", 0.0)
        with self._lock:
            self.events.append({"event_id": event_id, "t": time.time(), "user_id": user_id, "type": type,
                                "item_id": item_id, "query": query, "list_id": list_id,
                                "source": shown["source"] if shown else None,
                                "price": round(price, 2) if type == "purchase" else 0.0})
        what = f"'{query}'" if query else f"item {item_id}"
        self.note("event", f"{type} {what} (user {user_id}) -> outbox")
        # Upload at once, so the server's real-time embedding sees the action before the
        # next list; when that fails the event waits in the outbox for the upload job.
        if self._upload_policy().allow():
            self._flush("after action")
        self._refresh_status()
        return {"event_id": event_id}

    def reconnect(self) -> dict:
        """What an app does on the OS's 'network is back' signal: upload the outbox, then sync."""
        return self._run(self._reconnect)

    def _reconnect(self) -> dict:
        before = self.client.outbox.count()
        self.client.reset_backoff()
        flushed = self._flush("network back")
        return {"outbox_before": before, "flush": flushed, "sync": self._sync()}

    def _flush(self, trigger: str) -> dict:
        start = time.perf_counter()
        res = self.client.flush()
        record = {"t": time.time(), "trigger": trigger, "sent": res.sent, "acknowledged": res.acknowledged,
                  "rejected": res.rejected, "remaining": res.remaining, "error": res.error,
                  "ms": (time.perf_counter() - start) * 1000}
        with self._lock:
            self.flushes.append(record)
        if res.sent:
            self.note("upload", f"uploaded {res.sent} events, {res.acknowledged} acknowledged"
                       + (f", {res.rejected} rejected" if res.rejected else "") + f"; outbox {res.remaining}")
        if res.error:
            self.note("error", f"upload failed ({trigger}): {_short(res.error)}; outbox {res.remaining}")
        return record

    def search(self, query: str, limit: int = 6) -> list[dict]:
        """Titles of the held items (the users' candidates and the popular list) containing every word of the
        query (works offline); each named by the product's own id."""
        words = [w for w in query.lower().split() if w]
        titles = self._run(self.client.cache.titles)
        hits = [i for i, t in sorted(titles.items(), key=lambda kv: kv[1])
                if words and all(w in t.lower() for w in words)][:limit]
        meta = self._run(self.client.cache.products, hits)
        return [{"item_id": i, "title": meta[i]["title"], "category": meta[i]["category"],
                 "price": round(meta[i]["price"], 2)} for i in hits if i in meta]

    def status(self) -> dict:
        with self._lock:
            status = dict(self._status)
            last_sync = next((s for s in reversed(self.syncs) if not s["error"]), None)
            last_flush = self.flushes[-1] if self.flushes else None
            notes = list(self.notes[-30:])
        return {**status, "device_id": self.device_id, "demo_users": self.users,
                "last_sync": last_sync, "last_flush": last_flush, "notes": notes}

    def tracked(self) -> list[dict]:
        with self._lock:
            return [dict(e) for e in self.events]

    def snapshot(self) -> dict:
        """Everything the operator metrics are computed from (copies, safe to read)."""
        with self._lock:
            return {"started_at": self.started_at, "lists": [dict(lst) for lst in self.lists],
                    "events": [dict(e) for e in self.events], "flushes": list(self.flushes),
                    "syncs": list(self.syncs), "samples": list(self.samples), "status": dict(self._status)}

    # --- the background tick: sample, and the upload job ---

    def _tick_loop(self) -> None:
        while not self._stop.wait(self.tick):
            with self._lock:
                status = dict(self._status)
                self.samples.append({"t": time.time(), "outbox": status.get("outbox", 0),
                                     "connectivity": status.get("connectivity"), **self._traffic()})
                del self.samples[:-3600]
            idle = self._pending is None or self._pending.done()
            if idle and status.get("outbox", 0) > 0:
                self._pending = self._pool.submit(self._auto_flush)

    def _upload_policy(self):
        """The SDK's backoff for uploads."""
        return self.client.uploads

    def _auto_flush(self) -> None:
        if self._upload_policy().allow():
            self._flush("upload job")
        self._refresh_status()


def _short(msg, n: int = 90) -> str:
    msg = str(msg)
    return msg if len(msg) <= n else msg[: n - 1] + "…"
