"""The answer to GET /v1/sync, computed without Flask: a device pulls the bundle for its users.

The answer names the signed manifest and carries, for each of the device's
users, what it needs to reach this version's record: the whole record, a delta
against the record it holds at its cursor, or (unchanged) only this version's
signature over the record it holds. Item vectors and metadata come with it, one
signed entry per item, only for the items of the users' lists (and the popular
list) that the device does not hold at their current revision. The model files are fetched separately
(with HTTP Range, so they resume) and only when their sha256 differs from what
the device holds. The protocol is docs/sync-protocol.md.

Each 200 answer is sealed (wire 6): one ed25519 signature, with the home's signing key (the manifest's),
over the live states, the unknown users and each list's items digest (the entries current at this
version), bound to the version, the request's cursor and the model. Entries and records are signed at
publish; the seal covers what only this answer says (sync-protocol.md §5.4, §4a "Freshness").

While a canary runs, a bundle version may have canary variants (server/bundle/variants.py): the answer's
manifest, item entries and live states are those of the variant chosen for the listed users, and the
device says which model it holds (`model=`), so a switch between variants of one version (a canary
starting, a rollback, a promotion) reaches it without waiting for the next publish.

The HTTP side (query parsing, device token, rate limit, the artifact downloads) is server/api/sync.py:
it builds a SyncRequest, calls answer(), and sends the SyncAnswer as it is; BundleUnavailable is its 503.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal, cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pocketrank.exporter.signing import PRIVATE_NAME, load_private
from pocketrank.shared import wire
from pocketrank.shared.errors import BundleUnavailable, IntegrityError, PocketrankError
from pocketrank.shared.wire import pack_state, parse_manifest

from ..online.encoding import model_kind
from ..stores.base import RECORDS_EPOCH, RecordRow
from . import item_entries, variants

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SyncRequest:
    """One device's sync, parsed and checked (server/api/sync.py)."""
    cursor: int  # the version the device holds (0: none)
    users: list[str]  # sorted, without repeats
    without: frozenset[str] = frozenset()  # listed users it holds no record for: answered whole, never 304
    lacking: tuple[int, ...] = ()  # item ids it says it lacks: sent whatever the cursor
    held_model: str | None = None  # the model it holds (`model=`); None: its cursor's bundle's live one
    if_none_match: str | None = None  # the If-None-Match header


@dataclass(frozen=True)
class SyncAnswer:
    """What to send: `body` (canonical JSON; empty for 304) with the ETag header."""
    status: Literal[200, 304]
    body: bytes
    etag: str

    @property
    def headers(self) -> dict[str, str]:
        return {"ETag": self.etag}

    @property
    def mimetype(self) -> str | None:
        """application/json for 200; None (the framework's default) for the empty 304."""
        return "application/json" if self.status == 200 else None


def answer(serving, req: SyncRequest) -> SyncAnswer:
    """The sync answer for `req` from `serving` (server/online/serving.Serving): its bundle version, home,
    store, routing, catalogues and rankers. Raises BundleUnavailable when nothing can be served."""
    cursor, users, without, lacking, held_model = (req.cursor, req.users, set(req.without), list(req.lacking),
                                                   req.held_model)
    version = serving.bundle_version
    if version == 0:
        raise BundleUnavailable("nothing published yet; run `pocketrank publish`")
    # The variant: the canary's when a rollout runs, this version has its variant, and every listed user
    # hashes into it (or the variant of the registry's live model, after a promotion); else the live bundle.
    bundle = serving.home.bundle_dir(version)
    mkey, pre = cast("tuple[tuple, Manifest]", manifest_for(bundle, version))  # None only with missing_ok
    vdir, variant_model, live_model = bundle, None, pre.model_version
    model = variants.choose(serving.routing(), users, live_model)
    if model != live_model and variants.MODEL_RE.fullmatch(model):
        # One read of the variant's files, no separate existence check: a rebuild (build_variant swaps
        # directories) or a removal at any moment before it leaves no variant, and the live bundle answers.
        got = manifest_for(variants.variant_dir(bundle, model), version, model, missing_ok=True)
        if got is not None:
            vdir, variant_model = variants.variant_dir(bundle, model), model
            mkey, pre = got
    etag = variants.etag(version, variant_model)
    cursor_facts = None  # the cursor's bundle's (popular, model), read at most once per request
    if held_model is None and cursor > 0:  # a device that does not name its model holds its cursor's live one
        if cursor >= version:
            held_model = live_model
        else:
            cursor_facts = _bundle_facts(serving.home, cursor)
            held_model = cursor_facts[1]
    # The device holds another model than this answer's (a variant switch, or a new live model): every item
    # entry its lists and popular reference comes again, under this answer's model; its records do not
    # depend on the model and are answered against its cursor as usual.
    switch = held_model is not None and held_model != pre.model_version
    if ((cursor >= version or req.if_none_match in (etag, f'"v{version}"'))
            and not without and not lacking and not switch):
        return SyncAnswer(304, b"", etag)
    if cursor >= version and without and not switch:  # the device is current: only the users it holds nothing for
        users = sorted(without)
    items = _items(vdir, mkey, pre.popular)
    history_from = int(serving.store.get_meta("records_history_from", "1") or 1)
    reason = snapshot_reason(cursor, history_from, version)
    cursors = {u: 0 if reason is not None or u in without else min(cursor, version) for u in users}
    frags = _entries(serving.store, (mkey, serving.store.get_meta(RECORDS_EPOCH, "")), version, users, cursors,
                     items.entries, every_item=switch)
    records = [f.json for f in frags.values() if f is not None]
    # Item entries: each listed user's candidates the device lacks at this revision, the popular list's
    # likewise (against the popular list of the cursor's bundle), and the items it names as lacking.
    send = {i for f in frags.values() if f is not None for i in f.items}
    pop_cursor = 0 if reason is not None or switch else min(cursor, version)
    pop_facts = cursor_facts if cursor_facts is not None and pop_cursor == cursor else _bundle_facts(serving.home,
                                                                                                       pop_cursor)
    send.update(item_entries.select(items.entries, pre.popular, pop_facts[0], pop_cursor, lacking))
    # Live states: the real-time layer's latest vector for each user, so a
    # device starts from every event the server has folded since publish.
    states = _states(serving, users, pre.model_version)
    unknown = [u for u in users if frags[u] is None]
    lists = {u: f.digest for u, f in frags.items() if f is not None}
    # The seal (pocketrank.shared.wire.seal_message): the states, the unknown users and the digest of each list's current
    # item entries, signed for this version, cursor and model. It is what lets a device refuse a forged state
    # and notice an entry a proxy dropped, replayed or froze.
    block = wire.sealed_block(states, unknown, lists, items.popular_digest)
    seal = _signer(serving.home).sign(wire.seal_message(version, cursor, pre.model_version, block))
    # The answer is assembled from pre-encoded JSON (sorted keys, no spaces): the records' and the
    # manifest's parts are encoded once per version, not per request.
    body = b"".join([
        b'{"artifacts":', pre.artifacts, b',"cursor":', str(cursor).encode(),
        b',"history_from":', str(history_from).encode(),
        b',"items":{', b",".join(items.frags[i] for i in sorted(send)), b'}',
        b',"list_digests":', _dumps(lists), b',"manifest":', pre.manifest,
        b',"popular_digest":', _dumps(items.popular_digest),
        b',"records":{', b",".join(records), b'},"seal":', _dumps(base64.b64encode(seal).decode()),
        b',"signature":', pre.signature,
        b',"snapshot":', b"false" if reason is None else b"true",
        b',"snapshot_reason":', _dumps(reason), b',"states":', _dumps(states),
        b',"unknown_users":', _dumps(unknown),
        b',"version":', str(version).encode(), b"}",
    ])
    return SyncAnswer(200, body, etag)


def snapshot_reason(cursor: int, history_from: int, version: int) -> str | None:
    """Why this answer is a snapshot (every record whole), or None when deltas against the cursor can go."""
    if cursor == 0:
        return "no cursor: a first sync gets every record whole"
    if cursor < history_from:
        return (f"cursor {cursor} is older than the kept history (versions {history_from}-{version}): "
                "every record is sent whole")
    return None


def _states(serving, users: list[str], model: str) -> dict[str, str]:
    """Each user's live state (PRS1, base64) in `model`'s space. The store's states are its current model's;
    for another model (a canary variant), the user's recent events folded with that model's item vectors,
    as the server ranks a canary user (server/rankers.VersionRanker)."""
    cat = serving.catalogues.get()
    current = serving.catalogues.model_version
    vr = None
    if current and model != current:
        try:
            vr = serving.rankers.get(model, cat, False)
        except PocketrankError as exc:  # its files are gone: the store's states, as before variants
            log.warning("no item vectors of model %s here (%s); sync answers carry the store's states", model, exc)
    records = serving.store.user_records(users, cat.dim)  # one read for all the listed users
    if _is_sequence(serving, model):
        # A sequence model's device runs the encoder over the user's history itself: it gets the events
        # the server holds (PRH1), then adds its own; what a state would be is the encoder's output.
        return {u: base64.b64encode(wire.pack_history(records[u].recent["item"], records[u].recent["type"],
                                                      records[u].recent["ts"])).decode() for u in users}
    return {u: base64.b64encode(pack_state(records[u].state if vr is None else vr.state(records[u]))).decode()
            for u in users}


def _is_sequence(serving, model: str) -> bool:
    return model_kind(serving.home.model_dir(model)) == "sequence"


def _dumps(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def entry(row: RecordRow, sig: bytes, held: RecordRow | None, raw: bytes | None, held_raw: bytes | None) -> dict:
    """One user's part of the answer: "same", "delta" or "full", each with this version's signature.
    `raw`, `held_raw`: the two records decompressed (None when one does not decode: then no delta)."""
    out = {"sha256": row.sha256.hex(), "sig": base64.b64encode(sig).decode()}
    if held is not None and held.sha256 == row.sha256:
        return {"kind": "same", **out}
    if held is not None and raw is not None and held_raw is not None:
        delta = wire.make_delta(held_raw, raw)
        if len(delta) < len(row.blob):
            return {"kind": "delta", **out, "base_version": held.version, "base_sha256": held.sha256.hex(),
                    "data": base64.b64encode(delta).decode()}
    return {"kind": "full", **out, "data": base64.b64encode(row.blob).decode()}


@dataclass(frozen=True)
class Fragment:
    """One user's part of an answer for a (version, cursor) pair."""
    json: bytes  # `"user":{...}`: the record entry
    items: tuple[int, ...]  # the item entries to send with it
    digest: str  # hex pocketrank.shared.wire.items_digest of the version's list and its current entries: sealed


# Each user's answer for a (version, cursor) pair, as its JSON fragment `"user":{...}` (None: no
# record at this version), is computed once, then served from memory: every device of one publish
# asks for the same pairs, and the delta (zstd) work is the costly part. Keyed by the manifest file
# (a store reset and republished under the same version is not confused with the old one) and the
# store's records_epoch (any write to the record log, e.g. a republished record, starts afresh).
_ENTRIES: OrderedDict[tuple, Fragment | None] = OrderedDict()
_MANIFESTS: dict[tuple, Manifest] = {}
_LOCK = threading.Lock()
# First in, first out. A full entry is ~850 B of JSON (a 480 B record in base64, sha256, signature), a
# delta's ~350 B: 100k users' snapshot and delta answers take ~120 MB per worker.
MAX_CACHED_ENTRIES = 200_000


def _entries(store, key: tuple, version: int, users: list[str], cursors: dict[str, int],
             items: dict, every_item: bool = False) -> dict[str, Fragment | None]:
    """Each user's fragment and the item ids to send with it: from the cache, else built from the store (and cached).
    `every_item`: the device holds entries of another model, so every item of the list goes."""
    out: dict[str, Fragment | None] = {}
    missing = []
    with _LOCK:
        for u in users:
            k = (key, u, cursors[u], every_item)
            if k in _ENTRIES:
                out[u] = _ENTRIES[k]
            else:
                missing.append(u)
    if not missing:
        return out
    current = store.records_at(version, missing)
    sigs = store.record_sigs(version, sorted(current))
    by_cursor: dict[int, list[str]] = {}
    for u in sigs:
        by_cursor.setdefault(cursors[u], []).append(u)
    held: dict[str, RecordRow] = {}
    for c, us in by_cursor.items():
        if c:
            held.update(store.records_at(c, us))
    built: dict[str, Fragment | None] = {}
    for u in missing:
        if u not in sigs:
            built[u] = None
            continue
        data, held_data = raw(current[u]), raw(held[u]) if u in held else None  # each decompressed once
        now_ids = ids(data)
        built[u] = Fragment(_dumps(u) + b":" + _dumps(entry(current[u], sigs[u], held.get(u), data, held_data)),
                            tuple(item_entries.select(items, now_ids,
                                                      ids(held_data) if u in held and not every_item else None,
                                                      cursors[u] if u in held and not every_item else 0)),
                            item_entries.list_digest(items, now_ids).hex())
    with _LOCK:
        for u, frag in built.items():
            _ENTRIES[(key, u, cursors[u], every_item)] = frag
        while len(_ENTRIES) > MAX_CACHED_ENTRIES:
            _ENTRIES.popitem(last=False)
    out.update(built)
    return out


def raw(row: RecordRow) -> bytes | None:
    """A stored record decompressed; None when it does not decode. The server's own rows: bounded by
    the general cap, not the device's record cap (a record past that is the device's to refuse)."""
    try:
        return wire.decompress(row.blob)
    except IntegrityError:
        return None


def ids(data: bytes | None) -> list[int]:
    """A record's item ids; none when it does not decode (the device refuses such a record anyway)."""
    if data is None:
        return []
    try:
        return wire.unpack_candidates_raw(data)[0].tolist()
    except IntegrityError:
        return []


@dataclass(frozen=True)
class Manifest:
    """A version's manifest, parsed, and its parts of the answer already JSON-encoded."""
    manifest: bytes  # JSON string: base64 of the manifest file
    signature: bytes  # JSON string
    artifacts: bytes  # JSON object: name -> URL
    popular: tuple[int, ...]  # the signed cold-start list
    model_version: str


@dataclass(frozen=True)
class _Items:
    """A version's item entries and each one's JSON fragment `"id":{"data":...,"sig":...}`, encoded once."""
    entries: dict
    frags: dict
    popular_digest: str  # hex pocketrank.shared.wire.items_digest of the popular list's entries


_ITEMS: dict[tuple, _Items] = {}


def _items(bundle, key: tuple, popular: tuple[int, ...]) -> _Items:
    hit = _ITEMS.get(key)
    if hit is None:
        entries = item_entries.load(bundle / item_entries.ITEMS_FILE)
        frags = {i: _dumps(str(i)) + b":" + _dumps({"data": base64.b64encode(e.raw).decode(),
                                                     "sig": base64.b64encode(e.sig).decode()})
                 for i, e in entries.items()}
        hit = _Items(entries, frags, item_entries.list_digest(entries, popular).hex())
        with _LOCK:
            if len(_ITEMS) > 4:
                _ITEMS.clear()
            _ITEMS[key] = hit
    return hit


_FACTS: dict[tuple, tuple[list[int] | None, str | None]] = {}
_SIGNERS: dict[tuple, Ed25519PrivateKey] = {}


def _signer(home) -> Ed25519PrivateKey:
    """The home's signing key (the manifest's), read once per key file: it seals every answer.
    BundleUnavailable (a 503) when there is none: an unsealed answer is one no device accepts."""
    path = home.keys / PRIVATE_NAME
    try:
        key = (str(path), path.stat().st_mtime_ns)
    except OSError:
        raise BundleUnavailable(f"no signing key at {path} to seal sync answers with; run `pocketrank keys init` "
                                "and publish") from None
    hit = _SIGNERS.get(key)
    if hit is None:
        try:
            hit = load_private(home.keys)
        except (PocketrankError, ValueError, OSError) as exc:
            raise BundleUnavailable(f"the signing key at {path} cannot be read ({exc})") from exc
        with _LOCK:
            _SIGNERS.clear()
            _SIGNERS[key] = hit
    return hit


def _bundle_facts(home, version: int) -> tuple[list[int] | None, str | None]:
    """(popular list, model version) of an older bundle's live manifest; (None, None) when it is gone (every
    popular item is sent; the device's model is taken as unknown, so its entries are selected as before).

    Read once per bundle file (its mtime in the key, as for manifests), not per request."""
    if version <= 0:
        return None, None
    path = home.bundle_dir(version) / "manifest.json"
    try:
        key = (str(path), path.stat().st_mtime_ns)
    except OSError:
        return None, None
    if key not in _FACTS:
        try:
            manifest = json.loads(path.read_bytes())
            popular, model = manifest.get("popular"), manifest.get("model_version")
        except (OSError, ValueError, AttributeError):
            popular, model = None, None
        with _LOCK:
            if len(_FACTS) > 64:
                _FACTS.clear()
            _FACTS[key] = (popular if isinstance(popular, list) else None, model if isinstance(model, str) else None)
    return _FACTS[key]


def manifest_for(bundle, version: int, variant_model: str | None = None,
                 missing_ok: bool = False) -> tuple[tuple, Manifest] | None:
    """A bundle's (or, with `variant_model`, its canary variant's) manifest, parsed and encoded once per file.

    `missing_ok`: None when its files are not there (a variant being rebuilt or removed: the caller answers
    with the live bundle), instead of BundleUnavailable (a 503)."""
    where = str(bundle)
    try:  # the file's mtime in the key: a store reset and republished under the same version is reread
        key = (where, version, os.stat(where + "/manifest.json").st_mtime_ns)
    except FileNotFoundError:
        if missing_ok:
            return None
        raise BundleUnavailable(f"bundle {version} is missing its manifest; publish again") from None
    hit = _MANIFESTS.get(key)
    if hit is None:
        try:  # a variant directory swapped or removed since the stat above: as if it were not there
            body = (bundle / "manifest.json").read_bytes()
            sig = (bundle / "manifest.sig").read_text().strip()
        except FileNotFoundError:
            if missing_ok:
                return None
            raise
        try:
            manifest = parse_manifest(body)
        except IntegrityError as exc:  # e.g. a wire v2 bundle published before an upgrade
            raise BundleUnavailable(f"bundle {version} cannot be served ({exc}); run `pocketrank publish`") from exc
        prefix = f"/v1/artifacts/{version}/" + (f"canary/{variant_model}/" if variant_model else "")
        hit = Manifest(_dumps(base64.b64encode(body).decode()), _dumps(sig),
                       _dumps({k: prefix + a["file"] for k, a in manifest["artifacts"].items()}),
                       tuple(manifest["popular"]), str(manifest["model_version"]))
        with _LOCK:
            if len(_MANIFESTS) > 64:
                _MANIFESTS.clear()
            _MANIFESTS[key] = hit
    return key, hit
