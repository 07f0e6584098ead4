"""What the orchestration layer plugs into the command line, found through entry points.

The application layer never imports `flows/` (DESIGN.md); `flows/` registers itself instead, in
pyproject.toml: the `surd.engines` group maps an engine name (`prefect`) to a callable
`(config, train) → result` that runs the whole path as that engine's flow, and the `surd.commands`
group adds command groups (`deploy`). An engine or group that is not installed is simply absent.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

import typer

Rebuild = Callable[[dict[str, Any], bool], dict[str, Any]]


class EngineMissing(LookupError):
    """The asked engine is not installed (its entry point is absent)."""


def engine(name: str) -> Rebuild:
    """The `surd.engines` entry point `name`: runs the whole path as that engine's flow."""
    for ep in entry_points(group="surd.engines"):
        if ep.name == name:
            return ep.load()  # type: ignore[no-any-return]
    raise EngineMissing(
        f"engine {name!r} is not installed (reinstall the package: pip install -e .); "
        "or run in-process with --engine local"
    )


def announce(settings: Any) -> list[str] | None:
    """Announce the releases waiting in the data root's outbox, through the `surd.announce` entry
    point (flows/events.py), when a Prefect API is configured (PREFECT_API_URL); None when none
    is (the next scheduled `release` flow announces them)."""
    if not os.environ.get("PREFECT_API_URL"):
        return None
    for ep in entry_points(group="surd.announce"):
        return ep.load()(settings)  # type: ignore[no-any-return]
    return None


def add_commands(app: typer.Typer) -> None:
    """Let each installed `surd.commands` entry point add its commands to `app`."""
    for ep in entry_points(group="surd.commands"):
        ep.load()(app)
