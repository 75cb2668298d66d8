"""Pulling a bundle: fetch, verify everything, then apply it in one SQLite transaction.

Nothing is written to the database until every byte is verified (manifest
signature, rollback, expiry, each artifact's length and sha256, each user's
record signature and sha256, each item entry's signature for the model) and
the new ranker has loaded. Then the item entries (only the items the held lists
and the popular list reference; the others dropped), the artifact pointers, the
users' records and packed rows, the live user states (with the outbox's pending
events folded on top) and the version are written in one transaction: an interrupted sync leaves the device wholly on
its previous version. See edge_runtime/artifacts.py for the model files and
docs/sync-protocol.md for the protocol.

The cursor of a request is the version at which the device holds the listed
users' records, so the server answers each with a delta against that record,
or only a new signature when it did not change. Users are grouped by the
version of their held record; users without one (added later, or whose held
record did not match what the server assumed) are asked for with cursor=0,
whole. Such an answer may carry the held version again; it is accepted, for
records and states only, when its manifest is byte for byte the held, signed one.

wifi_only: a newer version whose model (ranker or encoder) the device does not
hold is left pending as a whole while models may not be downloaded; the held
version, model and lists together, keeps serving (docs/sync-protocol.md, "wifi_only").

Canary variants (docs/sync-protocol.md, "Canary variants"): a version may come in variants that differ
in model (a canary's). A device holding a variant names its model (`model=`); the first answer of a
sync may switch it to another variant of the held version (a canary starting, a rollback, a promotion):
a manifest of the held version is accepted when it is signed and names another model, and applied
whole. A later round's answer with another variant of the held version (its users route otherwise:
a mixed device) gives its records only: its item entries and states are another model's.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from pocketrank.shared import wire
from pocketrank.shared.features import DECAY, TYPE_WEIGHTS, UserState
from pocketrank.shared.schemas import EVENT_TYPES

from . import sequence as seq
from .answer import StaleEntries, check_answered, check_envelope, stale_lists, verify_answer_seal
from .cache import DeviceCache
from .errors import IntegrityError, SignatureError, TransportError
from .items import held_lists, verify_items
from .outbox import Outbox
from .packed import ItemTable, repack
from .rerank import LocalRanker, ModelSlot
from .results import SyncResult
from .transport import Transport
from .trust import verify_manifest, verify_record
from .userstate import SearchIndex, fold

REQUIRED_ARTIFACTS = ("ranker",)
# Lacking item ids named in one request (the server's limit).
MAX_LACKING_ITEMS = 2000
MODEL_ARTIFACTS = ("ranker", "encoder")  # what wifi_only defers
RECORD_KINDS = ("full", "delta", "same")
# One sync answer: 50 users' records (~1 KB each whole) and their lists' item entries (10,000 distinct
# items at most, ~400 B each with a 64-dim f16 vector, ~1 KB at 256 dims). Past this it is hostile.
MAX_SYNC_ANSWER_BYTES = 32 * 1024 * 1024
ARTIFACT_URLS = "artifact_urls"  # meta key: the held version's artifact URLs, from its answer


@dataclass(frozen=True)
class Asked:
    """The request an answer is checked against."""
    users: frozenset[str]
    cursor: int
    without: frozenset[str]
    lacking: tuple[int, ...]
    held: int  # the device's bundle version when the request went out


class Syncer:
    def __init__(self, cache: DeviceCache, transport: Transport, public_key, slot: ModelSlot[LocalRanker], outbox: Outbox,
                 search: SearchIndex, timeout: float, max_model_bytes: int, clock: Callable[[], float] = time.time,
                 users_per_request: int = 50, sleep: Callable[[float], None] = time.sleep,
                 models_allowed: bool = True):
        self.cache, self.transport, self.public_key = cache, transport, public_key
        self.slot, self.outbox, self.search = slot, outbox, search
        self.timeout, self.max_model_bytes, self.clock = timeout, max_model_bytes, clock
        self.users_per_request = users_per_request
        self.sleep = sleep
        self.models_allowed = models_allowed
        self._need_full: set[str] = set()  # users whose held record the server's answer did not match
        self._asked: set[str] = set()  # the users of the request being answered
        self._lacking: set[int] = set()  # items the held lists reference but the device holds no current entry for
        self._lacking_asked: set[int] = set()  # asked for once this run: not asked again if the server has none
        self._req = Asked(frozenset(), 0, frozenset(), (), 0)  # the request being answered

    def run(self, users: list[str]) -> SyncResult:
        if self.public_key is None:
            raise SignatureError("no public key configured: pass the server's keys/signing.pub to EdgeClient")
        held = self.cache.version
        result = SyncResult(held, False)
        # First round, cursor = held: the users held at it, and the users held at no version, named in
        # `without` so the server answers them whole (one request and one transaction for both).
        # Users unknown at the held version go as held ones: the server has no record of theirs at
        # the cursor either, so it answers them whole (or unknown again), and a 304 stays possible.
        unknown = self._unknown_since(held)
        versions = self._held_versions(users)
        first = [u for u, v in versions.items() if v == held or v == 0 or u in unknown][: self.users_per_request]
        without = [u for u in first if held and versions[u] == 0 and u not in unknown]
        if first:
            self._exchange(first, held, without, result, same_version_ok=bool(without), switch_ok=True)
        # Each round either gives a chunk its records or marks its users unknown at
        # this version; a newer version arriving mid-way starts the rounds over.
        for _ in range(4 * (len(users) // self.users_per_request + 1)):
            if result.deferred:
                break
            lagging = self._lagging(users)
            if not lagging:
                break
            cursor = max(lagging.values())
            chunk = [u for u, v in lagging.items() if v == cursor][: self.users_per_request]
            if not self._exchange(chunk, cursor, (), result, same_version_ok=True):
                break
        # Items the held lists reference without a current entry (entries held under an older model,
        # a damaged copy, a list that arrived before its items): named once, with a held user.
        held_users = [u for u, v in self._held_versions(users).items() if v == self.cache.version]
        if self._lacking - self._lacking_asked and held_users and not result.deferred:
            self._exchange(held_users[:1], self.cache.version, (), result, same_version_ok=True)
        self._repair_artifacts(result)
        return result

    def _exchange(self, users: list[str], cursor: int, without: Sequence[str], result: SyncResult,
                  same_version_ok: bool, switch_ok: bool = False) -> bool:
        """One request and its answer applied; False on a 304. An answer whose item entries do not add up to
        its sealed digests is asked for once more with cursor 0 (every entry of the lists comes whole: a held
        copy gone stale is replaced); a second such answer is refused (StaleEntries, an IntegrityError)."""
        answer = self._request(users, cursor, without)
        if answer is None:
            return False
        try:
            self._apply(answer, result, same_version_ok, switch_ok)
        except StaleEntries:
            if cursor == 0:
                raise
            again = self._request(users, 0)
            if again is not None:  # _request refuses a 304 to cursor 0
                self._apply(again, result, same_version_ok=True, switch_ok=switch_ok)
        return True

    def _request(self, users: list[str], cursor: int, without: Sequence[str] = ()) -> dict | None:
        held = self.cache.version
        # With `without`, the server never answers 304 (those users need their records).
        headers = {"If-None-Match": f'"v{cursor}"'} if cursor and cursor == held and not without else None
        lacking = sorted(self._lacking - self._lacking_asked)[:MAX_LACKING_ITEMS]
        self._lacking_asked.update(lacking)
        if lacking:  # the server never answers 304 to a request naming lacking items
            headers = None
        params = {"cursor": cursor, "users": ",".join(users), **({"without": ",".join(without)} if without else {}),
                  **({"items": ",".join(map(str, lacking))} if lacking else {})}
        snap = self.cache.snapshot()
        if snap.manifest.get("rollout") and snap.model_version:
            # A canary variant held: the server cannot tell it from the live model of the cursor's bundle
            # (which it assumes when `model` is absent), so the device names it.
            params["model"] = str(snap.model_version)
        for attempt in range(3):
            try:
                status, body = self.transport.get_json("/v1/sync", timeout=self.timeout, headers=headers,
                                                       params=params, limit=MAX_SYNC_ANSWER_BYTES)
                break
            except TransportError as exc:
                # A rate limit of a second or two is waited out here, so a
                # many-user sync is not failed half-way by its own request rate.
                wait = getattr(exc, "retry_after", None)
                if getattr(exc, "status_code", None) not in (429, 503) or wait is None or wait > 2.0 or attempt == 2:
                    raise
                self.sleep(wait)
        self._asked = set(users)
        self._req = Asked(frozenset(users), cursor, frozenset(without), tuple(lacking), held)
        if status == 304:
            # "Nothing newer" cannot answer a device that holds nothing (cursor 0), users it holds no record of
            # (`without`) or items it lacks: the server never says it, so someone else did.
            if cursor == 0 or without or lacking:
                raise IntegrityError(f"the server answered 304 (nothing newer) to cursor {cursor}"
                                     f"{' with users held at no version' if without else ''}"
                                     f"{' naming lacking items' if lacking else ''}: that cannot be true; refused")
            return None
        return check_envelope(body)

    def _held_external_ids(self, model: str, entries: object) -> dict[str, int]:
        """{external id: index} of the held entries an answer's entries must not contradict: those held under
        `model` that the answer does not replace (the others are dropped when it applies)."""
        incoming = set(entries) if isinstance(entries, dict) else set()
        return {ext: i for i, ext in self.cache.query("SELECT item_id, external_id FROM items WHERE model = ?",
                                                      (model,))
                if ext is not None and str(i) not in incoming}

    def _held_versions(self, users: list[str]) -> dict[str, int]:
        """The version each user's held record was last confirmed at; 0 when none is held."""
        held: dict[str, int] = {}
        for i in range(0, len(users), 500):
            part = users[i : i + 500]
            held.update(self.cache.query(f"SELECT user_id, version FROM candidates WHERE user_id IN "
                                         f"({','.join('?' * len(part))})", part))
        return {u: int(held.get(u) or 0) for u in users}

    def _unknown_since(self, version: int) -> set[str]:
        return {r[0] for r in self.cache.query("SELECT user_id FROM unknown_users WHERE version >= ?", (version,))}

    def _lagging(self, users: list[str]) -> dict[str, int]:
        """Users not yet at the held version, each with the cursor to ask for them with."""
        held = self.cache.version
        unknown = self._unknown_since(held)
        return {u: 0 if u in self._need_full else v for u, v in self._held_versions(users).items()
                if v < held and u not in unknown}

    # --- verify ---

    def _verify_manifest(self, body: dict, same_version_ok: bool, switch_ok: bool = False
                         ) -> tuple[bytes, dict, str]:
        """(manifest bytes, manifest, how it applies): "new" (a newer version), "same" (the held manifest again:
        records and states), "switch" (another variant of the held version, first round: applied whole),
        "foreign" (another variant of the held version in a later round: its records only) or "obsolete"
        (another sync on this database applied this version or a newer one while the request was out:
        nothing to apply, and no rollback either)."""
        try:
            manifest_bytes = base64.b64decode(body["manifest"], validate=True)
        except (KeyError, TypeError, binascii.Error) as exc:
            raise IntegrityError("sync answer has no readable manifest") from exc
        held = self.cache.version
        held_bytes = (self.cache.get("manifest") or "").encode()
        try:  # unverified, only to pick the rollback floor; what is accepted is decided after the signature
            peeked = wire.parse_manifest(manifest_bytes).get("version")
        except IntegrityError:
            peeked = None
        # A race, not a rollback: the version held moved since this request went out (another thread's or
        # process's sync), and the answer is not newer than it now. The held manifest again is taken as a
        # re-sent one; anything else is dropped unread (the rounds go on from the new held version).
        raced = held > self._req.held and isinstance(peeked, int) and peeked <= held
        if raced and manifest_bytes != held_bytes:
            return manifest_bytes, {}, "obsolete"
        same = (same_version_ok or raced) and held > 0 and manifest_bytes == held_bytes
        floor = held - 1 if held > 0 and (same or peeked == held) else held
        manifest = verify_manifest(manifest_bytes, body.get("signature", ""), self.public_key, floor, now=self.clock(),
                                   clock_offset=self.cache.clock_offset())
        mode = "same" if same else "new"
        if manifest["version"] == held and not same:
            # The held version again, signed: another variant of it when it names another model, else a replay
            # (the held manifest's own bytes name the held model too).
            if manifest.get("model_version") == self.cache.snapshot().model_version:
                raise SignatureError(f"bundle version {held} is not newer than the held {held}: rollback refused")
            mode = "switch" if switch_ok else "foreign"
        missing = [n for n in REQUIRED_ARTIFACTS if n not in manifest["artifacts"]]
        if missing:
            raise IntegrityError(f"bundle {manifest['version']} lacks artifacts {missing}; the server must republish")
        folds = manifest.get("user_state") or {}
        if folds.get("decay") != DECAY or folds.get("type_weights") != dict(TYPE_WEIGHTS):
            raise IntegrityError(f"bundle {manifest['version']} folds user state with {folds}, this SDK with "
                                 f"decay {DECAY} and {dict(TYPE_WEIGHTS)}: update the app")
        if not isinstance(manifest.get("embedding_dim"), int) or manifest["embedding_dim"] <= 0:
            raise IntegrityError("manifest embedding_dim must be a positive integer")
        return manifest_bytes, manifest, mode

    def _held_raw(self, user_id: str) -> bytes | None:
        """The raw PRC2 record the device holds for the user; None if none, or if it no longer decodes."""
        row = self.cache.query_one("SELECT blob FROM candidates WHERE user_id = ?", (user_id,))
        if row is None:
            return None
        try:
            return wire.decompress(row[0], wire.MAX_RECORD_BYTES)
        except IntegrityError:
            return None

    def _records(self, body: dict, version: int, asked: set[str]
                 ) -> tuple[dict[str, bytes], list[str], list[str], dict[str, list[int]]]:
        """(new records as zstd frames, users whose held record is confirmed, users to ask for whole, and each
        applied or confirmed user's list of item indexes).

        Per record: the signature over (version, user, sha256) first, then the
        bytes: a full frame or a delta inflated to at most MAX_RECORD_BYTES, its
        sha256 against the signed one, and its layout. A delta or "same" whose
        base is not the record the device holds is not applied; the user is
        asked for again with cursor 0 (a wrong claim costs a request, never a
        wrong list). A delta or "same" answering cursor 0 (or a user held at no
        version, or in a snapshot) cannot be true: the server answers those whole.
        Anything else that fails rejects the whole answer.
        """
        entries = body.get("records") or {}
        if not isinstance(entries, dict):
            raise IntegrityError("sync answer's records must be an object")
        whole = asked if self._req.cursor == 0 or body.get("snapshot") else set(self._req.without)
        records, same, need_full, lists = {}, [], [], {}
        for uid, e in entries.items():
            if uid not in asked:  # not this request's: never stored (the device would gain a user)
                continue
            if not isinstance(e, dict) or e.get("kind") not in RECORD_KINDS:
                raise IntegrityError(f"record of user {uid!r} must be an object with kind full, delta or same")
            if e["kind"] != "full" and uid in whole:
                raise IntegrityError(f"record of user {uid!r} is a {e['kind']!r} answering a request for it whole "
                                     "(cursor 0, a user held at no version, or a snapshot): that cannot be true; "
                                     "refused")
            try:
                sha = bytes.fromhex(e["sha256"])
                sig = base64.b64decode(e["sig"], validate=True)
                data = base64.b64decode(e["data"], validate=True) if e["kind"] != "same" else b""
                base_sha = bytes.fromhex(e["base_sha256"]) if e["kind"] == "delta" else b""
            except (KeyError, TypeError, ValueError, binascii.Error) as exc:
                raise IntegrityError(f"record of user {uid!r} is malformed: {exc!r}") from exc
            if len(sha) != 32 or len(sig) != 64:
                raise IntegrityError(f"record of user {uid!r}: sha256 must be 32 bytes and sig 64")
            verify_record(self.public_key, version, uid, sha, sig)
            if e["kind"] != "full":
                held = self._held_raw(uid)
                want = sha if e["kind"] == "same" else base_sha
                if held is None or hashlib.sha256(held).digest() != want:
                    need_full.append(uid)
                    continue
                if e["kind"] == "same":
                    same.append(uid)
                    lists[uid] = wire.unpack_candidates_raw(held)[0].tolist()
                    continue
            try:
                raw = (wire.decompress(data, wire.MAX_RECORD_BYTES) if e["kind"] == "full"
                       else wire.apply_delta(held, data, wire.MAX_RECORD_BYTES))  # type: ignore[arg-type]  # held checked above
                if hashlib.sha256(raw).digest() != sha:
                    raise IntegrityError(f"sha256 of the {e['kind']} record does not match the signed one; "
                                         "corrupted or tampered")
                lists[uid] = wire.unpack_candidates_raw(raw)[0].tolist()  # decodes, or raises IntegrityError
            except IntegrityError as exc:
                raise IntegrityError(f"record of user {uid!r}: {exc}") from exc
            records[uid] = data if e["kind"] == "full" else wire.compress(raw)
        return records, same, need_full, lists

    def _histories(self, body: dict) -> dict[str, np.ndarray]:
        """A sequence model's live states: each user's history as the server holds it (PRH1 rows)."""
        out = {}
        for uid, b64 in (body.get("states") or {}).items():
            if uid not in self._asked:
                continue
            try:
                out[uid] = wire.unpack_history(base64.b64decode(b64, validate=True), len(EVENT_TYPES))
            except (TypeError, binascii.Error) as exc:
                raise IntegrityError(f"live history of user {uid!r} is not base64") from exc
            except IntegrityError as exc:
                raise IntegrityError(f"live history of user {uid!r}: {exc}") from exc
        return out

    def _states(self, body: dict, dim: int) -> dict[str, UserState]:
        states = {}
        for uid, b64 in (body.get("states") or {}).items():
            if uid not in self._asked:
                continue
            try:
                state = wire.unpack_state(base64.b64decode(b64, validate=True))
            except (TypeError, binascii.Error) as exc:
                raise IntegrityError(f"live state of user {uid!r} is not base64") from exc
            except IntegrityError as exc:  # a bad layout, or a NaN or infinite value
                raise IntegrityError(f"live state of user {uid!r}: {exc}") from exc
            if len(state.s) != dim:
                raise IntegrityError(f"live state of user {uid!r} has dim {len(state.s)}, the bundle {dim}")
            states[uid] = state
        return states

    # --- download ---

    def _artifact(self, name: str, art: dict, urls: dict | None, result: SyncResult) -> bytes:
        """The artifact's verified bytes: from a held file if one matches, else downloaded (resuming)."""
        sha, length = art["sha256"], art["length"]
        files = self.cache.files
        if files.has(sha, length):
            try:
                return files.read(sha)
            except IntegrityError:
                pass  # damaged on disk: fetch it again
        url = urls.get(name) if isinstance(urls, dict) else None
        if not isinstance(url, str):
            raise IntegrityError(f"sync answer gives no URL for artifact {name!r}")
        have = files.partial(sha)
        if len(have) >= length:
            have = b""
        try:
            # At most the declared length: a server that ignores Range sends it whole, and more than
            # that is never a valid answer (no endless data).
            data, ranged = self.transport.get_bytes(url, timeout=self.timeout, start=len(have), limit=length)
        except TransportError as exc:
            if getattr(exc, "status_code", None) == 416:
                files.drop_partial(sha)
            partial = getattr(exc, "partial", b"")
            if partial:
                files.save_partial(sha, have + partial if getattr(exc, "ranged", False) else partial)
                raise TransportError(f"{url}: interrupted ({exc}); sync again to resume") from exc
            raise
        data = have + data if ranged else data
        if len(data) < length:
            files.save_partial(sha, data)
            raise TransportError(f"{url}: got {len(data)} of {length} bytes; sync again to resume")
        files.drop_partial(sha)
        wire.check_digest(data, sha, length, url)
        files.put(sha, data)
        result.artifacts_fetched.append(name)
        result.bytes_downloaded += len(data)
        return data

    def _repair_artifacts(self, result: SyncResult) -> None:
        """Fetch again every held artifact whose file is missing or no longer matches its sha256 (a damaged
        disk, a file removed by hand). Without this a damaged ranker is never repaired: the device serves its
        cached order, and every sync is a 304 that downloads nothing. Reading and hashing the held files costs
        a few ms (the ranker is ~20 KB, at most max_model_bytes); it runs once per sync, after the rounds (a
        new version brings its own files). A download that fails is raised like any sync failure."""
        snap = self.cache.snapshot()
        arts = snap.manifest.get("artifacts") if snap.manifest else None
        if not isinstance(arts, dict) or result.deferred:
            return
        damaged = {name: art for name, art in arts.items()
                   if isinstance(art, dict) and not self.cache.files.verify(art["sha256"], art["length"])}
        if not damaged:
            return
        try:
            urls = json.loads(self.cache.get(ARTIFACT_URLS) or "{}")
        except ValueError:
            urls = {}
        # A database from before ARTIFACT_URLS: the URL the protocol gives (docs/sync-protocol.md §12, §16).
        rollout = f"canary/{snap.model_version}/" if snap.manifest.get("rollout") else ""
        urls = {name: urls.get(name) if isinstance(urls, dict) and isinstance(urls.get(name), str)
                else f"/v1/artifacts/{snap.version}/{rollout}{art.get('file', name)}" for name, art in arts.items()}
        for name, art in damaged.items():
            data = self._artifact(name, art, urls, result)
            if name == "ranker":
                self.slot.put(art["sha256"], LocalRanker(data, self.max_model_bytes))

    # --- apply ---

    def _apply(self, body: dict, result: SyncResult, same_version_ok: bool, switch_ok: bool = False) -> None:
        manifest_bytes, manifest, mode = self._verify_manifest(body, same_version_ok, switch_ok)
        if mode == "obsolete":
            return
        # What only this answer says: its version and cursor as the manifest and the request say, and the seal
        # over its states, unknown users and item digests (for the answer's model, even when only its records
        # are taken).
        if body["version"] != manifest["version"] or body["cursor"] != self._req.cursor:
            raise IntegrityError(f"sync answer says version {body['version']} and cursor {body['cursor']}; its "
                                 f"manifest is version {manifest['version']} and the request's cursor "
                                 f"{self._req.cursor}: that cannot be true; refused")
        verify_answer_seal(body, self.public_key, manifest["version"], self._req.cursor,
                           str(manifest["model_version"]))
        check_answered(body, set(self._asked))
        # "foreign": another variant's answer in a later round; its records are the held version's (they carry
        # no model), its item entries and states another model's: only the records are taken.
        same, foreign = mode in ("same", "foreign"), mode == "foreign"
        version, model, dim = manifest["version"], str(manifest["model_version"]), manifest["embedding_dim"]
        if foreign:  # the held variant's model and dim
            snap = self.cache.snapshot()
            model, dim = str(snap.model_version), snap.dim or dim
        arts = manifest["artifacts"]
        held_shas = self.cache.artifact_shas()
        for name, art in arts.items():
            if not isinstance(art, dict) or not isinstance(art.get("length"), int):
                raise IntegrityError(f"manifest artifact {name!r} is malformed")
        # Records are checked before any download: a tampered answer costs no artifact bytes.
        records, carried, need_full, list_ids = self._records(body, version, self._asked)
        # Each item entry is checked (signature under this manifest's model, layout, dim, caps) before
        # anything is downloaded or written; one bad entry refuses the answer.
        items = {} if foreign else verify_items(body.get("items"), model, dim, self.public_key,
                                                held=self._held_external_ids(model, body.get("items")))
        if not foreign:
            # Every list this answer applies or confirms, and the popular list, must be held at exactly the
            # entries it sealed once the answer applies: the held ones of this model, overlaid by the answer's.
            shas = {int(i): bytes(h) for i, h in self.cache.query("SELECT item_id, sha256 FROM items WHERE model = ?",
                                                                  (model,)) if h is not None}
            shas.update({i: it.sha256 for i, it in items.items()})
            stale, popular = stale_lists(list_ids, manifest["popular"], body, shas)
            if stale or popular:
                raise StaleEntries(stale, popular)
        if not same and not self.models_allowed:
            models = [n for n in MODEL_ARTIFACTS if n in arts and arts[n]["sha256"] != held_shas.get(n)
                      and not self.cache.files.has(arts[n]["sha256"], arts[n]["length"])]
            if models:
                # The manifest binds this version's lists to its model: applying them
                # with the held model would mix two versions, so none of it applies.
                result.deferred = (f"bundle {version} needs a new {' and '.join(models)}, which waits for an "
                                   f"allowed network (wifi_only); version {self.cache.version} keeps serving")
                result.bytes_downloaded += len(json.dumps(body))
                return
        parts: dict[str, bytes] = {}
        if not same:
            for name, art in arts.items():
                parts[name] = self._artifact(name, art, body.get("artifacts"), result)
        sequence = (manifest.get("model") or {}).get("kind") == "sequence"
        states = {} if foreign or sequence else self._states(body, dim)
        histories = self._histories(body) if sequence and not foreign else {}
        ranker = None
        if not same and arts["ranker"]["sha256"] != self.slot.sha:
            # Refuse a bad model before anything is applied; the one in use stays.
            ranker = LocalRanker(parts["ranker"], self.max_model_bytes)

        now = self.clock()
        superseded = set(held_shas.values()) - {a["sha256"] for a in arts.values()}
        table = None
        with self.cache.tx(large=True) as conn:
            # Entries held under another model than this version's mean nothing to its ranker: dropped (asked for
            # again), before this answer's entries go in, whose external ids may be theirs (a v3 database's
            # entries carry guessed ids, schema.py V4).
            other_model = [(i,) for (i,) in conn.execute("SELECT item_id FROM items WHERE model IS NOT ?", (model,))
                           if i not in items]
            conn.executemany("DELETE FROM items WHERE item_id = ?", other_model)
            conn.executemany(
                "INSERT OR REPLACE INTO items (item_id, external_id, vector, title, category, price, in_stock, sha256, "
                "model) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(i, it.external_id, it.vector.astype("<f4").tobytes(), it.title, it.category, it.price,
                  int(it.in_stock), it.sha256, model) for i, it in items.items()])
            if not same:
                conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('popular', ?)",
                             (json.dumps([int(i) for i in manifest["popular"]]),))
                conn.execute("DELETE FROM artifacts")
                conn.executemany("INSERT INTO artifacts (name, sha256, length) VALUES (?, ?, ?)",
                                 [(n, a["sha256"], a["length"]) for n, a in arts.items()])
                for key, value in (("bundle_version", str(version)), ("manifest", manifest_bytes.decode()),
                                   ("bundle_model", model),  # the snapshot's key with the version (cache.py)
                                   # where this version's artifacts are served: a damaged file is fetched again
                                   # from there even when every later answer is a 304 (_repair_artifacts)
                                   (ARTIFACT_URLS, json.dumps(body.get("artifacts") or {}, sort_keys=True))):
                    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('synced_at', ?)", (str(now),))
            conn.executemany("INSERT OR REPLACE INTO candidates (user_id, blob, version, received_at) "
                             "VALUES (?, ?, ?, ?)", [(u, b, version, now) for u, b in records.items()])
            unknown = [u for u in body.get("unknown_users") or []
                       if isinstance(u, str) and u in self._asked and u not in records]
            conn.executemany("INSERT OR REPLACE INTO unknown_users (user_id, version) VALUES (?, ?)",
                             [(u, version) for u in unknown])
            conn.executemany("DELETE FROM unknown_users WHERE user_id = ?", [(u,) for u in records])
            # Confirmed current by this version's record signature: as fresh as a re-sent record.
            conn.executemany("UPDATE candidates SET version = ?, received_at = ? WHERE user_id = ?",
                             [(version, now, u) for u in carried])
            # Items no held list (nor the popular list) references are dropped.
            lists = held_lists(conn.execute("SELECT user_id, blob FROM candidates").fetchall())
            # The server's history for each listed user replaces the held one; the events still queued here
            # (not yet in the server's) go on top, as the folded state's do below.
            for uid, rows in histories.items():
                seq.replace(conn, uid, [(EVENT_TYPES[int(r["type"])], int(r["item"]) or None, None, float(r["ts"]))
                                        for r in rows])
                seq.append(conn, uid, [(e["type"], None, None if e.get("item_id") is None else str(e["item_id"]),
                                        float(e["timestamp"])) for e in self.outbox.pending_for(uid, conn)])
            # Entries the held histories name are kept and asked for like the lists': the encoder reads their vectors.
            needed = set(int(i) for i in manifest["popular"]).union(*lists.values(), seq.history_items(conn))
            held_items = dict(conn.execute("SELECT item_id, model FROM items").fetchall())
            unreferenced = [(i,) for i in held_items if i not in needed]
            conn.executemany("DELETE FROM items WHERE item_id = ?", unreferenced)
            drop = other_model + unreferenced
            touched = set(items) | {i for (i,) in drop}
            if touched:
                conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('items_revision', ?)",
                             (str(int((conn.execute("SELECT value FROM meta WHERE key = 'items_revision'").fetchone()
                                       or ["0"])[0]) + 1),))
                table = ItemTable.load(conn)
            # Packed rows are rebuilt for the users whose record arrived and those whose list holds an item
            # that arrived, changed or went: no other row can differ from what a full rebuild would give.
            repack(conn, sorted(set(records) | {u for u, ids in lists.items() if touched & ids}), table,
                   skip_damaged=True)
            # (entries that arrived are in held_items already, inserted above under this manifest's model)
            lacking = needed - {i for i, m in held_items.items() if m == model}
            # The live state holds every event the server acknowledged; events
            # still in the outbox are folded again on top of it.
            for uid, state in states.items():
                fold(conn, uid, self.outbox.pending_for(uid, conn), dim, self.search.vector, base=state)
        self.cache.invalidate()
        self._need_full.difference_update(records)
        self._lacking = lacking
        self._need_full.update(need_full)
        if ranker is not None:
            self.slot.put(arts["ranker"]["sha256"], ranker)
        for sha in superseded:  # only now: the previous version is no longer referenced
            self.cache.files.path(sha).unlink(missing_ok=True)
        result.version, result.changed = version, True
        result.users_updated += sorted(records)
        result.users_unchanged += sorted(carried)
        result.users_delta += sorted(u for u, e in (body.get("records") or {}).items()
                                     if u in records and isinstance(e, dict) and e.get("kind") == "delta")
        result.snapshot = result.snapshot or bool(body.get("snapshot"))
        result.items_received += sorted(items)
        result.items_dropped += sorted(i for (i,) in drop)
        result.unknown_users += unknown
        result.bytes_downloaded += len(json.dumps(body))
