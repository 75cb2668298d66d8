"""The publisher: a signed, versioned bundle of candidates, item vectors and the int8 ranker.

A bundle is the unit a device syncs to. Its manifest (canonical JSON, signed
with ed25519) lists every artifact's sha256 and length; per-user candidate
records are listed by digest in the `users` index artifact, so a device can
verify the records of just its own users.
"""

from __future__ import annotations

import base64
import shutil
import time

import numpy as np
from tqdm import tqdm

from exporter.signing import init_keys, sign
from shared import wire
from shared.features import DECAY, TYPE_WEIGHTS, user_vector

from .home import Home
from .catalogue import load_catalogue
from .ranking import Ranker, popular

DEFAULT_EXPIRY_DAYS = 30


def publish_job(home: Home, n_candidates: int = 200, expiry_days: float = DEFAULT_EXPIRY_DAYS,
                progress: bool = True) -> dict:
    store = home.store()
    model_version = home.current_model(store)
    model_dir = home.model_dir(model_version)
    export = home.read_json(model_dir / "export.json")
    version = int(store.get_meta("bundle_version", "0")) + 1
    out = home.bundle_dir(version)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)

    catalogue = load_catalogue(store)
    ranker = Ranker(catalogue, model_dir / "ranker.fp32.onnx", n_candidates=n_candidates)
    dim = catalogue.vectors.shape[1]
    records, digests = {}, {}
    for user_id in tqdm(store.user_ids(), desc="candidates", unit="user", disable=not progress):
        state = store.user_state(user_id, dim)
        uv = user_vector(state)
        ids = ranker.retrieve(uv, store.consumed_items(user_id))
        scores = ranker.score(uv, ids)
        order = np.lexsort((ids, -scores))  # best first, ties by id
        blob = wire.pack_candidates(ids[order], scores[order], state)
        records[user_id] = blob
        digests[user_id] = wire.sha256_hex(blob)
    store.put_records(version, records)

    items = store.items()
    artifacts = {
        "items": wire.pack_vectors(catalogue.ids, catalogue.vectors),
        "catalog": wire.pack_json({
            "items": [it.to_dict() for it in items],
            "popular": popular(store.item_counts(), catalogue.in_stock),
        }),
        "users": wire.pack_user_index(digests),
        "ranker": (model_dir / "ranker.int8.onnx").read_bytes(),
        # The user tower as a graph (fp32: it has no weights to quantize), for
        # devices that fold their own state without shared.features.
        "encoder": (model_dir / "encoder.onnx").read_bytes(),
    }
    names = {"items": "items.bin.zst", "catalog": "catalog.json.zst", "users": "users.idx.zst",
             "ranker": "ranker.int8.onnx", "encoder": "encoder.onnx"}
    for key, data in artifacts.items():
        (out / names[key]).write_bytes(data)
    now = time.time()
    manifest = {
        "wire_version": wire.WIRE_VERSION,
        "version": version,
        "created_at": now,
        "expires_at": now + expiry_days * 86400,
        "model_version": model_version,
        "embedding_dim": dim,
        "user_state": {"decay": DECAY, "type_weights": dict(TYPE_WEIGHTS)},
        "artifacts": {key: {"file": names[key], "sha256": wire.sha256_hex(d), "length": len(d)}
                      for key, d in artifacts.items()},
        "model": {"opset": export["opset"], "exporter": export["exporter"],
                  "quantization": export["quantization"]["method"], "parity": export["parity"],  # gates within
                  "encoder": {k: export["encoder"][k] for k in ("inputs", "outputs", "precision", "parity")}},
    }
    body = wire.canonical_json(manifest)
    init_keys(home.keys)
    (out / "manifest.json").write_bytes(body)
    (out / "manifest.sig").write_text(base64.b64encode(sign(body, home.keys)).decode() + "\n")
    store.set_meta("bundle_version", str(version))
    return {
        "version": version,
        "users": len(records),
        "bytes": {key: len(d) for key, d in artifacts.items()},
        "record_bytes_mean": float(np.mean([len(b) for b in records.values()])) if records else 0.0,
    }
