"""One writer at a time per data root and table (or release, or embedding set).

Locks are `flock`s on files under `<root>/locks/`: the kernel drops a lock when its process dies,
however it dies, so a lock left by a killed run is free at once (no stale-lock guessing). The
holder writes who it is (pid, host, since) beside the lock, for the message a waiting run shows.

A whole-table writer holds the table's lock exclusively. The partitions of one partitioned run
(disjoint ids, one writer each) hold it shared, plus their own partition's lock exclusively: they
run side by side, but never beside a whole-table writer or a second copy of the same partition.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path

POLL_S = 0.2


class Busy(RuntimeError):
    """Another run is writing the same thing and did not finish within the wait."""


def _holder(path: Path) -> str:
    try:
        h = json.loads(path.with_suffix(".holder.json").read_text())
    except (OSError, ValueError):
        return "a partitioned run, or one that just started"
    return f"pid {h['pid']} on {h['host']}, since {h['since']}"


def _acquire(path: Path, shared: bool, wait_s: float, on_wait: Callable[[str], None] | None) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + wait_s
    told = False
    while True:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                raise Busy(
                    f"another run is writing {path.stem} ({_holder(path)}); waited {wait_s:.0f} s "
                    "(lock_wait_s). Let it finish, or stop it; a killed run frees its lock at once"
                ) from None
            if on_wait is not None and not told:
                on_wait(f"waiting for {path.stem}: another run is writing it ({_holder(path)})")
                told = True
            time.sleep(POLL_S)


def _release(fd: int) -> None:
    with suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


@contextmanager
def writing(
    root: Path,
    name: str,
    wait_s: float = 0.0,
    part: tuple[int, int] | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[None]:
    """Hold the write lock of `name` under the data root `root` for the block (partition `part`
    of a partitioned run: shared with its sibling partitions). Waits up to `wait_s`, then `Busy`."""
    locks = Path(root) / "locks"
    fds = [_acquire(locks / f"{name}.lock", part is not None, wait_s, on_wait)]
    try:
        path = locks / (f"{name}.lock" if part is None else f"{name}.part-{part[0]}-of-{part[1]}.lock")
        if part is not None:
            fds.append(_acquire(path, False, wait_s, on_wait))
        holder = path.with_suffix(".holder.json")
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": datetime.now(UTC).isoformat()}
        holder.write_text(json.dumps(info))
        try:
            yield
        finally:
            holder.unlink(missing_ok=True)
    finally:
        for fd in reversed(fds):
            _release(fd)
