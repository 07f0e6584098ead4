"""`surd review …`: enqueue, serve the web app, manage stewards, export decisions."""

from __future__ import annotations

import os
import secrets
from enum import StrEnum
from pathlib import Path

import typer

from surd import pipeline
from surd.app.cli.common import CONFIG, JSON, fail, open_data, out, refuse_on_errors, result, settings
from surd.review import auth, queries, queue
from surd.review import export as writers
from surd.review.db import open_reader
from surd.summary import describe


class Role(StrEnum):
    steward = "steward"
    admin = "admin"


class What(StrEnum):
    outcomes = "outcomes"
    audit = "audit"


def enqueue(as_json: bool = JSON, config: Path | None = CONFIG) -> None:
    """Enqueue what went on through every declared stage, withdraw queued items a stage dropped
    since, empty taken-down content, and apply the auto-review policy (if one is set)."""

    r = pipeline.review(settings(config))
    result(r, as_json, describe("review", r))


def serve(
    config: Path | None = CONFIG,
    host: str | None = None,
    port: int | None = typer.Option(None, min=1, max=65535),
    workers: int = typer.Option(1, min=1, help="server processes (share one database)"),
) -> None:
    """Serve the review web app and its JSON API."""
    import uvicorn

    s = settings(config)
    refuse_on_errors(s, "review")
    queue.connect(s.review_database_url).dispose()  # migrate once, before any worker starts
    if config is not None:
        os.environ["SURD_CONFIG"] = str(config)
    if workers > 1 and s.review.session_secret is None:
        # every worker must sign sessions with the same key; it lives only in this process tree
        os.environ["SURD_REVIEW__SESSION_SECRET"] = secrets.token_hex(32)
    uvicorn.run(
        "surd.app.web.app:from_env",
        factory=True,
        host=host or s.review.host,
        port=port or s.review.port,
        workers=workers,
        log_level="warning",
        # X-Forwarded-For names the client only when it comes from a configured proxy
        proxy_headers=bool(s.review.trusted_proxies),
        forwarded_allow_ips=",".join(s.review.trusted_proxies) or None,
    )


def add_steward(
    name: str,
    role: Role = typer.Option(Role.steward, help="what the account may do"),
    password: str = typer.Option(
        ...,
        prompt=True,
        hide_input=True,
        confirmation_prompt=True,
        envvar="SURD_NEW_STEWARD_PASSWORD",
        help="asked for when not given (or from $SURD_NEW_STEWARD_PASSWORD)",
    ),
    token: bool = typer.Option(False, "--token", help="also create an API token (shown once)"),
    config: Path | None = CONFIG,
) -> None:
    """Create or reset a steward account (and, with --token, an API bearer token)."""

    engine = queue.connect(settings(config).review_database_url)
    try:
        auth.add_steward(engine, name, password, role.value)
    except ValueError as exc:
        raise fail(str(exc)) from None
    out.print(f"steward {name} ({role.value}) saved", highlight=False)
    if token:
        out.print(f"API token (shown once): {auth.new_token(engine, name)}", highlight=False)


def export(
    to: Path = typer.Argument(..., metavar="FILE", help="a .parquet or .jsonl file"),
    what: What = typer.Option(What.outcomes, help="outcomes: one row per item; audit: every decision"),
    config: Path | None = CONFIG,
) -> None:
    """Export every item's outcome, or the append-only decision log."""

    if to.suffix not in (".parquet", ".jsonl"):
        raise fail(f"{to}: the file name must end in .parquet or .jsonl")
    s = settings(config)
    open_data(s, create=False)  # a reader: a missing data root is an error, never made
    engine = open_reader(s.review_database_url)
    try:
        rows = queries.export_rows(engine, what.value)
        n = writers.write_parquet(rows, to) if to.suffix == ".parquet" else writers.write_jsonl(rows, to)
    finally:
        engine.dispose()
    out.print(f"{n} rows → {to}", highlight=False)


def register(app: typer.Typer) -> None:
    review_app = typer.Typer(help="The review queue.", no_args_is_help=True)
    review_app.command("enqueue")(enqueue)
    review_app.command("serve")(serve)
    review_app.command("add-steward")(add_steward)
    review_app.command("export")(export)
    app.add_typer(review_app, name="review")
