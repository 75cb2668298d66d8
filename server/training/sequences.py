"""Per-user event sequences and the temporal leave-last-out split."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pocketrank.shared.features import sequence_weights


@dataclass
class Split:
    """Item indices (0-based) per user, oldest first: train, then one val and one test item."""

    train: list[np.ndarray]
    val: np.ndarray  # -1 where the user has too few events
    test: np.ndarray


def user_sequences(users: np.ndarray, items: np.ndarray, n_users: int) -> list[np.ndarray]:
    """Group time-sorted interactions into one item-index array per user."""
    order = np.argsort(users, kind="stable")  # stable keeps the time order inside a user
    bounds = np.searchsorted(users[order], np.arange(n_users + 1))
    return [items[order[bounds[u] : bounds[u + 1]]] for u in range(n_users)]


def split_last_two(seqs: list[np.ndarray]) -> Split:
    train, val, test = [], np.full(len(seqs), -1), np.full(len(seqs), -1)
    for u, s in enumerate(seqs):
        if len(s) >= 3:
            train.append(s[:-2])
            val[u], test[u] = s[-2], s[-1]
        else:
            train.append(s)
    return Split(train, val, test)


def pooled_history(seq: np.ndarray, length: int, event_type: str = "click") -> tuple[np.ndarray, np.ndarray]:
    """The last `length` items (as 1-based table rows, 0 = padding) and their pooling weights."""
    tail = seq[-length:]
    idx = np.zeros(length, dtype=np.int64)
    w = np.zeros(length, dtype=np.float32)
    if len(tail):
        idx[-len(tail) :] = tail + 1
        w[-len(tail) :] = sequence_weights([event_type] * len(tail))
    return idx, w


def training_examples(train: list[np.ndarray], length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (history prefix, next item) pair: (N, L) rows, (N, L) weights, (N,) targets."""
    n = sum(max(len(s) - 1, 0) for s in train)
    hist = np.zeros((n, length), dtype=np.int64)
    weights = np.zeros((n, length), dtype=np.float32)
    targets = np.zeros(n, dtype=np.int64)
    # The weights of a tail of m events are the last m of the full-length
    # weights, so one vector serves every prefix.
    full = sequence_weights(["click"] * length)
    row = 0
    for s in train:
        for t in range(1, len(s)):
            tail = s[max(0, t - length) : t]
            m = len(tail)
            hist[row, length - m :] = tail + 1
            weights[row, length - m :] = full[length - m :]
            targets[row] = s[t]
            row += 1
    return hist, weights, targets
