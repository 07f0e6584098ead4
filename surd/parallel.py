"""Work in parallel, results in order: the one bounded in-order map every stage uses.

`in_order` keeps at most `window` pieces of work in flight on any executor (a process pool, a
thread, a Dask cluster: whatever `submit` hands the work to) and yields each item with its result
in input order, so memory stays flat whatever the input's size and the output is the same as a
serial run's. `batched` cuts a stream into lists. `plan_threads` gives a model stage its share of
the cores (torch's default takes them all, whatever else runs beside it).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Lists of `size` items (the last may be smaller), read lazily."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class Done(Generic[R]):
    """A result computed at once, behind the same `result()` as a future's (work run inline)."""

    def __init__(self, value: R) -> None:
        self.value = value

    def result(self) -> R:
        return self.value


def _result(handle: Any) -> Any:
    return handle.result()


def in_order(
    items: Iterable[T],
    submit: Callable[[T], Any],
    window: int,
    wait: Callable[[Any], R] = _result,
) -> Iterator[tuple[T, R]]:
    """(item, result) in input order, with at most `window` items submitted and not yet yielded.

    `submit(item)` starts the work and returns a handle (a `concurrent.futures.Future`, a Dask
    future, a `Done`, or anything `wait` knows: `wait(handle)` blocks until its result)."""
    flight: deque[tuple[T, Any]] = deque()
    limit = max(1, window)
    for item in items:
        flight.append((item, submit(item)))
        if len(flight) >= limit:
            first, handle = flight.popleft()
            yield first, wait(handle)
    while flight:
        first, handle = flight.popleft()
        yield first, wait(handle)


def die_with_parent(parent: int) -> None:
    """Pool initializer: a worker ends when the stage's process does (even by SIGKILL), so a
    killed run leaves no orphan still working (Linux prctl PR_SET_PDEATHSIG)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the call above
        os._exit(1)


def plan_threads(setting: int | None, decode_workers: int, processes_per_host: int = 1) -> int:
    """A model stage's torch threads: the setting, or its process's share of the cores (several
    local Dask workers split them) less the decode workers beside it, at least one; so that decode
    workers + model threads of every process on the machine stay within its cores."""
    if setting is not None:
        return setting
    share = (os.cpu_count() or 1) // max(1, processes_per_host)
    return max(1, share - decode_workers)


def use_threads(n: int) -> int:
    """Set torch's intra-op threads (and OpenMP's and MKL's, for what starts after) to `n`."""
    import torch  # only a model stage that runs calls this; the stage module has imported it already

    torch.set_num_threads(n)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    return n
