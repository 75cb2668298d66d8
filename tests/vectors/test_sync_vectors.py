"""The sync-protocol golden vectors (tests/vectors/sync/) replayed against the Python client.

For each scenario a fresh device syncs step by step through a transport that
checks every request (path, query, headers) against the vector and answers with
the vector's response bytes; afterwards the device's state must be the vector's
expected state, or the sync must fail with the expected error and leave the
previous state. A fresh run of make_sync_vectors.py must give identical bytes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from pathlib import Path

import pytest

from pocketrank.shared import errors, wire

HERE = Path(__file__).resolve().parent
SYNC = HERE / "sync"
SCENARIOS = sorted(p.stem for p in SYNC.glob("*.json") if p.stem not in ("keys", "artifacts"))


def load(name: str) -> dict:
    return json.loads((SYNC / f"{name}.json").read_text(encoding="utf-8"))


class Replay:
    """Serves the exchanges of one step in order; artifacts from artifacts.json."""

    def __init__(self):
        self.artifacts = {url: base64.b64decode(a["bytes_base64"]) for url, a in load("artifacts").items()}
        self.exchanges: list[dict] = []

    def get_json(self, url, timeout, params=None, headers=None, limit=None):
        assert self.exchanges, f"an unexpected request: {url} {params}"
        ex = self.exchanges.pop(0)
        want = ex["request"]
        assert (url, {k: str(v) for k, v in (params or {}).items()}, headers or {}) == (
            want["path"], want["params"], want["headers"])
        raw = base64.b64decode(ex["response"]["body_base64"])
        body = json.loads(raw) if raw else None
        assert body == ex["response"]["body"]
        return ex["response"]["status"], body

    def get_bytes(self, url, timeout, start=0, limit=None):
        data = self.artifacts[url]
        return (data[start:], True) if start else (data, False)

    def post_json(self, url, body, timeout, headers=None):
        raise errors.TransportError("no uploads in the vectors")

    def close(self):
        pass


def held_state(client) -> dict:
    snap = client.cache.snapshot()
    records = {}
    for uid, blob, version in client.cache.query("SELECT user_id, blob, version FROM candidates"):
        raw = wire.decompress(blob)
        records[uid] = {"confirmed_version": version, "payload_sha256": hashlib.sha256(raw).hexdigest(),
                        "item_ids": wire.unpack_candidates_raw(raw)[0].tolist()}
    unknown = sorted(r[0] for r in client.cache.query("SELECT user_id FROM unknown_users"))
    items = {str(i): bytes(h).hex() for i, h in client.cache.query("SELECT item_id, sha256 FROM items")}
    return {"bundle_version": snap.version, "records": records, "unknown_users": unknown,
            "artifacts": client.cache.artifact_shas(), "items": dict(sorted(items.items(), key=lambda kv: int(kv[0])))}


def entry_external_id(raw: bytes) -> tuple[int, str]:
    """(item index, the product's own id) of a raw PRI2 entry, read from docs/wire-format.md §9.7's table:
    i32 index at 4, u8 precision at 8, u16 dim at 9, the vector at 16, then u8 E and E bytes of UTF-8."""
    assert raw[:4] == b"PRI2"
    (index,) = struct.unpack_from("<i", raw, 4)
    (dim,) = struct.unpack_from("<H", raw, 9)
    at = 16 + {0: 4 * dim, 1: 2 * dim, 2: 4 + dim}[raw[8]]
    return index, raw[at + 1 : at + 1 + raw[at]].decode("utf-8")


def served_external_ids(exchanges) -> dict[int, str]:
    """Index -> product id of every item entry the vector's answers carry (one id per index: indexes are stable)."""
    out: dict[int, str] = {}
    for ex in exchanges:
        for key, entry in ((ex["response"]["body"] or {}).get("items") or {}).items():
            index, ext = entry_external_id(base64.b64decode(entry["data"]))
            assert index == int(key) and ext
            assert out.setdefault(index, ext) == ext
    return out


def steps(name: str) -> list[dict]:
    scenario = load(name)
    before = steps(scenario["starts_from"]) if "starts_from" in scenario else []
    return before + scenario["steps"]


@pytest.mark.parametrize("name", SCENARIOS)
def test_the_python_client_reaches_the_vector_state(name, tmp_path):
    pytest.importorskip("onnxruntime")
    from pocketrank.edge_runtime.client import EdgeClient

    keys = load("keys")
    replay = Replay()
    client = EdgeClient(tmp_path / "device.sqlite", keys["public_key_hex"], transport=replay,
                        clock=lambda: keys["device_clock"])
    served: list[dict] = []
    try:
        for step in steps(name):
            served += step["exchanges"]
            replay.exchanges = list(step["exchanges"])
            expect = step["expect"]
            if "error" in expect:
                with pytest.raises(getattr(errors, expect["error"]), match=expect["match"]):
                    client.sync(step["sync"])
            else:
                result = client.sync(step["sync"])
                got = {k: getattr(result, k) for k in expect["result"]}
                got = {k: sorted(v) if isinstance(v, list) else v for k, v in got.items()}
                assert got == expect["result"]
            assert not replay.exchanges, "the client made fewer requests than the vector"
            assert held_state(client) == expect["state"]
            # Each held item is named by the product id its entry carries (wire 5), never by the index's digits.
            names = served_external_ids(served)
            held = dict(client.cache.query("SELECT item_id, external_id FROM items"))
            assert held == {i: names[i] for i in held}
            assert all(ext != str(i) for i, ext in held.items())
    finally:
        client.close()


def test_regenerating_the_vectors_gives_identical_bytes(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_sync_vectors", HERE / "make_sync_vectors.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fresh = module.generate(tmp_path)
    assert sorted(p.name for p in fresh) == sorted(p.name for p in SYNC.glob("*.json"))
    for path in fresh:
        assert path.read_bytes() == (SYNC / path.name).read_bytes(), path.name
