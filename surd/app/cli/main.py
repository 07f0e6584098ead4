"""`surd`: the root command, its options, and how every failure becomes one line and an exit code."""

from __future__ import annotations

import logging
import os
import sys
import traceback
from typing import Any

import typer

from surd import __version__
from surd.app.cli import data, ops, release, review, stages, takedown
from surd.app.cli.common import OPTIONS, err
from surd.app.cli.errors import Exit, classify, first_line
from surd.app.engines import add_commands

app = typer.Typer(
    help="Build, review, release and use the SURD dataset.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,  # main() prints one line; --debug the plain traceback
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        print(f"surd {__version__}")
        raise typer.Exit(0)


@app.callback()
def root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="print the version and exit"
    ),
    debug: bool = typer.Option(
        False, "--debug", envvar="SURD_DEBUG", help="show the traceback of an error (or SURD_DEBUG=1)"
    ),
    progress_every: float = typer.Option(
        10.0,
        "--progress-every",
        envvar="SURD_PROGRESS_EVERY",
        min=0.1,
        help="seconds between progress lines when stderr is not a terminal",
    ),
) -> None:
    OPTIONS.debug = debug
    OPTIONS.progress_every = progress_every


for module in (stages, data, release, review, takedown, ops):
    module.register(app)
add_commands(app)  # what flows/ plugs in (`deploy`), through entry points


def _usage_line(exc: typer.TyperException) -> str:
    """click's usage error as one line: the message, the command's usage, where help is."""
    message = " ".join(exc.format_message().split()).replace(": ,", ":")
    ctx = getattr(exc, "ctx", None)
    if ctx is None:
        return f"Error: {message}"
    usage = " ".join(ctx.get_usage().split()).removeprefix("Usage: ")
    return f"Error: {message} (usage: {usage}; try '{ctx.command_path} --help')"


def main(argv: list[str] | None = None) -> None:
    """Run the command line; every error is one line on stderr and an exit code (errors.py)."""
    try:
        code = app(args=argv, prog_name="surd", standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err.print("aborted")
        sys.exit(Exit.INTERRUPTED)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(Exit.INTERRUPTED)
    except typer.TyperException as exc:  # click's usage errors, as typer bundles them
        if type(exc).__name__ == "NoArgsIsHelpError":
            exc.show()  # type: ignore[attr-defined]
            sys.exit(Exit.USAGE)
        print(_usage_line(exc), file=sys.stderr)
        sys.exit(exc.exit_code if exc.exit_code != 1 else Exit.USAGE)
    except Exception as exc:
        known = classify(exc)
        if OPTIONS.debug or os.environ.get("SURD_DEBUG", "") not in ("", "0"):
            traceback.print_exc()
        if known is None:
            print(
                f"internal error: {type(exc).__name__}: {first_line(str(exc))} (a bug; rerun with --debug "
                "for the traceback)",
                file=sys.stderr,
            )
            sys.exit(Exit.PROBLEMS)
        code, message = known
        print(f"error: {first_line(message)}", file=sys.stderr)
        if "no space left" in message and not OPTIONS.debug:
            sys.unraisablehook = _log_unraisable  # writers' finalizers meet the same full disk
        sys.exit(code)


def _log_unraisable(info: Any) -> None:
    """After a full disk is reported: what a finalizer then fails to flush (a writer's footer as
    the process ends) goes to the log, not under the one error line."""
    logging.getLogger("surd").debug(
        "while ending after a full disk: %s in %r: %s",
        type(info.exc_value).__name__,
        info.object,
        info.exc_value,
    )
