"""One writer at a time per data root and table (or release, or embedding set).

Locks are `flock`s on files under `<root>/locks/`: the kernel drops a lock when its process dies,
however it dies, so a lock left by a killed run is free at once (no stale-lock guessing). The
holder writes who it is (pid, host, since) beside the lock, for the message a waiting run shows.

A whole-table writer holds the table's lock exclusively. The partitions of one partitioned run
(disjoint ids, one writer each) hold it shared, plus their own partition's lock exclusively: they
run side by side, but never beside a whole-table writer or a second copy of the same partition.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path

POLL_S = 0.2


class Busy(RuntimeError):
    """Another run is writing the same thing and did not finish within the wait."""


class LocksUnsupported(RuntimeError):
    """The data root's filesystem does not keep a second process out of a held lock."""


# a child process tries the lock its parent holds: it must be refused (exit 0)
PROBE = (
    "import fcntl, os, sys\n"
    "fd = os.open(sys.argv[1], os.O_RDWR)\n"
    "try:\n    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
    "except BlockingIOError:\n    sys.exit(0)\n"
    "sys.exit(3)\n"
)
_SUPPORTED: set[str] = set()  # lock folders found to work, once per process


def check_supported(folder: Path, probe: list[str] | None = None) -> None:
    """Refuse to write where a held `flock` does not keep another process out (a network mount
    without lock support would let two writers in and corrupt a table): hold a lock on a probe
    file and ask a child process to take it. Checked once per folder per process (about 20 ms)."""
    key = str(Path(folder).resolve())
    if key in _SUPPORTED and probe is None:
        return
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f".probe-{os.getpid()}-{time.monotonic_ns()}.lock"  # this process's own
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.ENOLCK, errno.EINVAL, errno.EOPNOTSUPP):
                raise LocksUnsupported(_unsupported(folder, f"flock fails: {exc.strerror}")) from None
            raise
        cmd = probe or [sys.executable, "-S", "-c", PROBE]
        rc = subprocess.run([*cmd, str(path)], check=False, timeout=30).returncode
        if rc != 0:
            raise LocksUnsupported(_unsupported(folder, "a second process took a lock this one holds"))
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    _SUPPORTED.add(key)


def _unsupported(folder: Path, why: str) -> str:
    return (
        f"file locks under {folder} do not keep writers apart ({why}); refusing to write there. Put the "
        "data root on a local disk or a shared filesystem with working locks (NFS v4, CephFS, Lustre "
        "with flock)"
    )


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
    check_supported(locks)
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
