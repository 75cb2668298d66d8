"""The connectivity policy's backoff and the transport's reading of Retry-After."""

import email.utils
import random
import time

import pytest

from pocketrank.edge_runtime.policy import Connectivity
from pocketrank.edge_runtime.transport import _retry_after


def policy(**kw):
    now = [0.0]
    return Connectivity(clock=lambda: now[0], rng=random.Random(1), **kw), now


def test_backoff_doubles_with_full_jitter_up_to_the_cap():
    p, _ = policy(base_backoff=1.0, max_backoff=8.0)
    delays = [p.failure() for _ in range(7)]
    caps = [1, 2, 4, 8, 8, 8, 8]
    assert all(c / 2 <= d <= c for d, c in zip(delays, caps))
    assert len({round(d, 6) for d in delays}) == 7  # jittered, not a fixed schedule
    assert not p.allow() and p.state == "backoff"


def test_retry_after_is_a_floor_and_is_capped():
    p, now = policy(base_backoff=1.0, max_retry_after=600)
    assert p.failure(retry_after=30) == 30
    assert p.delay() == 30
    p.reset()  # the network came back, but the server asked for 30 s
    assert not p.allow() and p.delay() == 30
    now[0] = 30
    assert p.allow() and p.state == "retry"
    assert p.failure(retry_after=10**9) == 600


def test_success_halves_the_failure_count_so_a_flapping_link_backs_off_longer():
    p, now = policy(base_backoff=1.0, max_backoff=64.0)
    for _ in range(4):
        p.failure()
    p.success()
    assert p.allow() and p.state == "online" and p.failures == 2
    assert p.failure() >= 2  # backs off as for a third failure in a row; a reset would give 0.5-1 s


def test_retry_after_header_forms():
    assert _retry_after("12") == 12
    assert _retry_after("-3") == 0
    assert _retry_after(None) is None and _retry_after("soon") is None
    later = email.utils.formatdate(time.time() + 120, usegmt=True)
    assert _retry_after(later) == pytest.approx(120, abs=2)
