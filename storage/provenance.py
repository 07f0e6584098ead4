"""Which code made an artifact: the git commit of the checkout this code runs from and whether
its tracked files had changes; outside a checkout (an installed package), only its version.
Two code states never write the same identity, as a bare `0.1.0` did."""

from __future__ import annotations

import functools
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent  # the checkout, when this code runs from one
PACKAGE = "surd-builder"


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _version() -> str:
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        return "unknown"


@functools.cache
def code_identity() -> dict[str, Any]:
    """{"version", "commit", "dirty"}: commit and dirty are None outside a checkout of this code
    (an installed copy that happens to sit inside some other repository is not that checkout)."""
    top = _git("rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != ROOT:
        return {"version": _version(), "commit": None, "dirty": None}
    changes = _git("status", "--porcelain", "--untracked-files=no")
    return {"version": _version(), "commit": _git("rev-parse", "HEAD"), "dirty": bool(changes)}
