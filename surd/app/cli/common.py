"""What every command group shares: the two consoles, options, settings, and result output."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from surd.app.cli.errors import CliError, Exit
from surd.config import load_settings
from surd.pipeline import open_data as open_
from surd.settings import Settings
from surd.summary import plain

out = Console(soft_wrap=True)  # results: stdout
err = Console(stderr=True, soft_wrap=True)  # progress, messages and errors: stderr

CONFIG = typer.Option(None, "--config", "-c", help="TOML settings file (else $SURD_CONFIG or ./surd.toml)")
JSON = typer.Option(False, "--json", help="print the result as JSON instead of a summary")


@dataclass
class Options:
    """The root command's options, for every command."""

    debug: bool = False
    progress_every: float = 10.0


OPTIONS = Options()


def settings(config: Path | None, **overrides: Any) -> Settings:
    return load_settings(config, **{k: v for k, v in overrides.items() if v is not None})


def open_data(s: Settings, create: bool = True) -> Any:
    """The data root (readers pass create=False). Deferred: the pipeline pulls in pyarrow and
    httpx, which `surd --help` and `surd --version` do not need."""

    return open_(s, create)


def result(value: Any, as_json: bool, summary: str) -> None:
    """A command's result: a one-line summary for a person, or the value as JSON."""
    if as_json:
        print(json.dumps(plain(value), indent=1, default=str))
    else:
        out.print(summary, highlight=False)


def fail(message: str, code: Exit = Exit.USAGE) -> CliError:
    return CliError(message, code)


def refuse_on_errors(s: Settings, role: str) -> None:
    """What a service runs at start: `surd doctor`'s checks for its role; the first error stops it
    (exit 2), naming the others' count and where to see them all."""
    from surd.app.doctor import diagnose, errors  # its checks import more than most commands need

    bad = errors(diagnose(s, role))
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        first = f"{bad[0].topic}: {bad[0].message}"
        raise fail(f"refusing to start: {first}{more}; `surd doctor --role {role}` lists all")
