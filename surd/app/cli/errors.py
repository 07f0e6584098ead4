"""Exit codes, and the one line each kind of failure prints on stderr.

| code | meaning |
|---|---|
| 0 | success |
| 1 | a check found problems (`release verify`), or an unexpected error (a bug: rerun with --debug) |
| 2 | usage or configuration: unknown command or option, bad value, unknown setting, bad SQL |
| 3 | data: data root missing, not a folder, not ours; no such release or run; damaged files |
| 4 | network or source: a crawl that stopped on a failure (unreachable, blocked, robots) |
| 5 | model or device: weights that cannot be loaded here, no GPU for device=cuda |
| 6 | busy: another run is writing the same table or release (after `lock_wait_s`); retry later |
| 130 | interrupted (Ctrl-C) |
"""

from __future__ import annotations

import errno
import sys
from enum import IntEnum

from surd.settings import SettingsError


class Exit(IntEnum):
    OK = 0
    PROBLEMS = 1
    USAGE = 2
    DATA = 3
    SOURCE = 4
    MODEL = 5
    BUSY = 6
    INTERRUPTED = 130


class CliError(Exception):
    """An expected failure of a command: its one-line message and exit code."""

    def __init__(self, message: str, code: Exit) -> None:
        super().__init__(message)
        self.code = code


def _is(exc: BaseException, module: str, *names: str) -> bool:
    """isinstance against classes of `module`, without importing it: an exception of a module
    that was never imported cannot be raised (keeps `surd --version` free of torch)."""
    mod = sys.modules.get(module)
    return mod is not None and isinstance(exc, tuple(getattr(mod, n) for n in names))


def classify(exc: BaseException) -> tuple[Exit, str] | None:
    """The exit code and message of an expected failure; None for an unexpected one (a bug)."""
    if isinstance(exc, CliError):
        return exc.code, str(exc)
    if _is(exc, "surd.models.device", "DeviceUnavailable") or _is(
        exc, "surd.models.profiles", "ModelUnavailable"
    ):
        return Exit.MODEL, str(exc)
    if isinstance(exc, SettingsError) or _is(exc, "surd.app.engines", "EngineMissing"):
        return Exit.USAGE, str(exc)
    if _is(exc, "storage.locks", "Busy"):
        return Exit.BUSY, str(exc)
    if _is(exc, "storage.locks", "LocksUnsupported"):
        return Exit.DATA, str(exc)
    if _is(exc, "storage.tables", "DamagedPart") or _is(exc, "surd.review.db", "NoDatabase"):
        return Exit.DATA, str(exc)
    if _is(exc, "sqlalchemy.exc", "OperationalError") and any(
        w in str(exc) for w in ("database is locked", "database is busy", "lock timeout")
    ):
        return Exit.BUSY, (
            "the review database is busy: another process has held its write lock longer than the wait "
            "(SQLite: `?timeout=` on its URL, default 60 s); retry when it is done"
        )
    if _is(exc, "storage.layout", "DataRootError"):
        return Exit.DATA, str(exc)
    if _is(exc, "surd.stages.crawl", "CrawlFailed"):
        return Exit.SOURCE, str(exc)
    if _is(exc, "surd.http.errors", "FetchError"):
        return Exit.SOURCE, f"{exc.reason}: {exc.url}"  # type: ignore[attr-defined]
    if _is(exc, "duckdb", "ParserException", "BinderException", "CatalogException"):
        return Exit.USAGE, f"bad SQL: {first_line(str(exc))}"
    if _is(exc, "duckdb", "Error"):
        return Exit.DATA, f"SQL failed: {first_line(str(exc))}"
    if _no_space(exc):
        return Exit.DATA, (
            "no space left on the device of the data root (or a file system's quota): free space and "
            "rerun; what was written whole is kept, nothing half-written is"
        )
    if isinstance(exc, NotADirectoryError | FileNotFoundError | PermissionError | IsADirectoryError):
        return Exit.DATA, f"{exc.strerror or type(exc).__name__}: {exc.filename}"
    return None


def _no_space(exc: BaseException) -> bool:
    """A full disk, as the OS says it (ENOSPC, EDQUOT) or as Arrow and DuckDB pass it on."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return "No space left on device" in str(exc) or "Disk quota exceeded" in str(exc)


def first_line(text: str) -> str:
    return next((ln.strip() for ln in text.splitlines() if ln.strip()), text.strip())
