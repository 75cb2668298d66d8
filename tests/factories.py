"""Small builders the tests share: events (as the store's Event or as the API's JSON), products, a free port.

Each test file binds the defaults it needs in one line, e.g.
`ev = partial(event_dict, user="t-1", item=50, age=60)`, instead of writing its own helper.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping
from typing import Any

from pocketrank.demo_app.localserver import free_port  # noqa: F401  (one copy: the demo's)
from pocketrank.shared.schemas import Event, Item

_ids = itertools.count()


def _context(context: Mapping[str, Any] | tuple = ()) -> tuple:
    return tuple(sorted(context.items())) if isinstance(context, Mapping) else tuple(context)


def event(etype: str = "click", item: Any = 1, *, n: int | None = None, user: str = "u1", device: str = "d1",
          ts: float | None = None, query: str | None = None, session: str = "s1",
          context: Mapping[str, Any] | tuple = ()) -> Event:
    """An Event "e{n}" (n from a counter when not given); at 1_700_000_000 + n unless `ts`.

    A search names no item; `context` is a dict or the Event's sorted (key, value) tuple."""
    n = next(_ids) if n is None else n
    return Event(f"e{n}", user, device, etype, ts if ts is not None else 1_700_000_000.0 + n,
                 None if etype == "search" else item, query, session, _context(context))


def event_dict(event_id: str, user: str = "u-1", item: Any = 7, etype: str = "click", *, age: float = 5.0,
               ts: float | None = None, device: str = "d1", **fields) -> dict:
    """An event as POST /v1/events takes it, `age` seconds old (or at `ts`); `fields` are added as given
    (session_id, context, ...)."""
    return {"event_id": event_id, "user_id": user, "device_id": device, "type": etype, "item_id": item,
            "timestamp": ts if ts is not None else time.time() - age, **fields}


def product(item_id: Any, category: str = "Books", title: str | None = None, price: float = 10.0,
            in_stock: bool = True, year: int | None = None, categories: tuple | None = None) -> Item:
    """A catalogue Item: titled "<category> product <id>" and in the categories (category,) unless given."""
    return Item(item_id, title if title is not None else f"{category} product {item_id}", category, year,
                price, in_stock, (category,) if categories is None else categories)


def dot_ranker(dim: int) -> bytes:
    """An ONNX model with the ranker's signature: scores = sigmoid(items @ user^T), serialized."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Transpose", ["user"], ["ut"], perm=[1, 0]),
         helper.make_node("MatMul", ["items", "ut"], ["logit2d"]),
         helper.make_node("Flatten", ["logit2d"], ["flat"], axis=0),
         helper.make_node("Squeeze", ["flat", "zero"], ["logit"]),
         helper.make_node("Sigmoid", ["logit"], ["scores"])],
        "dot_ranker",
        [helper.make_tensor_value_info("user", TensorProto.FLOAT, [1, dim]),
         helper.make_tensor_value_info("items", TensorProto.FLOAT, ["candidates", dim])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["candidates"])],
        [helper.make_tensor("zero", TensorProto.INT64, [1], [0])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return model.SerializeToString()


def complete_scrape(client, query: str = "", timeout: float = 120.0) -> str:
    """A /metrics page that carries the window's figures. A new app reads a long event log (the trained
    home's 100,000 events) in the background first, and /metrics leaves the figures out until it has."""
    deadline = time.monotonic() + timeout
    while True:
        text = client.get("/metrics" + query).get_data(as_text=True)
        if "pocketrank_business_figures_complete 1.0" in text or time.monotonic() > deadline:
            return text
        time.sleep(0.05)
