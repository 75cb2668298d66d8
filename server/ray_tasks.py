"""Batch jobs on Ray: one function run over partitions of a job, on this machine's cores or a cluster's.

Opt-in (docs/scaling.md, "Batch jobs on Ray"): `--ray-address` on `pocketrank publish` and `pocketrank
import`, or POCKETRANK_RAY_ADDRESS. Without it every job runs in one process, as it always has. The
partitions run the same function the single process runs over everything, and the caller writes their
results in partition order, so the output does not depend on where or in which order they ran.

    with ray_session("local") as ray:                  # starts a Ray on this machine (or joins one running)
        results = run_partitions(ray, work, [part1, part2], shared=(ids, vectors))

The address: "local" starts a Ray instance on this machine for the job (its cores are the workers) and
stops it after; anything else is handed to ray.init (`auto`: the cluster this machine belongs to,
`ray://head:10001`: a remote one). A process that already called ray.init (a test, a notebook) keeps
its own instance. `ray` is an optional extra (`pip install 'pocketrank[ray]'`), imported only here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar, cast

from pocketrank.shared.errors import PocketrankError

LOCAL = "local"


class RayMissing(PocketrankError):
    """The job was asked to run on Ray and ray is not installed."""


def import_ray() -> Any:
    """The ray module, or one line naming the extra to install."""
    try:
        import ray
    except ModuleNotFoundError as exc:
        if exc.name != "ray":
            raise
        raise RayMissing("running on Ray needs the 'ray' extra (ray not installed): "
                         "pip install 'pocketrank[ray]'") from exc
    return ray


@contextmanager
def ray_session(address: str) -> Iterator[Any]:
    """The ray module, connected: to the instance this process already has, else to `address` ("local":
    a new one on this machine), which is shut down (or disconnected from) when the job is done."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    if address == LOCAL:
        ray.init(include_dashboard=False, logging_level=logging.WARNING)
    else:
        try:
            ray.init(address=address, logging_level=logging.WARNING)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise PocketrankError(f"could not join the Ray cluster at {address!r}: {exc}") from exc
    try:
        yield ray
    finally:
        ray.shutdown()


def cluster_cpus(ray: Any) -> int:
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


S = TypeVar("S", bound=Sequence)


def split(items: S, parts: int) -> list[S]:
    """`items` in `parts` contiguous slices of near-equal length (the first ones longer), order kept."""
    parts = max(1, min(parts, len(items)))
    size, extra = divmod(len(items), parts)
    out: list[S] = []
    lo = 0
    for i in range(parts):
        hi = lo + size + (1 if i < extra else 0)
        out.append(cast(S, items[lo:hi]))  # a slice of a list is a list, of a range a range
        lo = hi
    return out


def run_partitions(ray: Any, fn: Callable, partitions: Sequence, shared: tuple = (),
                   done: Callable[[int], object] | None = None) -> list:
    """fn(*shared, partition) for every partition as Ray tasks; the results in partition order.

    `shared` (large arrays, or ObjectRefs of them) is put in the object store once and handed to every task by reference (a
    task on this machine reads numpy arrays from it without a copy). `done(i)` is called as partition i's
    result arrives, in order. An error in a task is raised here as the error it was (a PocketrankError
    stays one, so the command prints its one line)."""
    refs_shared = [x if isinstance(x, ray.ObjectRef) else ray.put(x) for x in shared]
    remote = ray.remote(fn)
    futures = [remote.remote(*refs_shared, part) for part in partitions]
    out = []
    with _cancelled_on_error(ray, futures):
        for i, future in enumerate(futures):
            out.append(_get(ray, future))
            if done is not None:
                done(i)
    return out


def stream_partitions(ray: Any, fn: Callable, partitions: Sequence, shared: tuple = (), backlog: int = 8
                      ) -> Iterator[tuple[int, Any]]:
    """(i, value) for every value the generator fn(*shared, partition i) yields, partitions in order, each
    partition's values in its order; every partition runs at once as a Ray task, each at most `backlog`
    values ahead of the consumer (so memory stays bounded however long a partition's stream)."""
    refs_shared = [ray.put(x) for x in shared]
    remote = ray.remote(num_returns="streaming", _generator_backpressure_num_objects=backlog)(fn)
    streams = [remote.remote(*refs_shared, part) for part in partitions]
    with _cancelled_on_error(ray, streams):
        for i, stream in enumerate(streams):
            for ref in stream:
                yield i, _get(ray, ref)


@contextmanager
def _cancelled_on_error(ray: Any, tasks: list) -> Iterator[None]:
    try:
        yield
    except BaseException:
        for task in tasks:
            try:
                ray.cancel(task)
            except Exception:  # noqa: BLE001 - finished already, or its worker gone: nothing to stop
                pass
        raise


def _get(ray: Any, ref: Any) -> Any:
    """ray.get, a task's error raised as the error it was (its remote traceback is in the chain)."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, BaseException):
            raise cause from exc
        raise
