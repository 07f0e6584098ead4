"""`surd takedown …`: record a request to remove content, list them; `surd release prune`
deletes superseded releases that still hold it."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Any

import typer

from surd import pipeline
from surd.app.cli.common import CONFIG, JSON, err, fail, open_data, result, settings
from surd.exports import made_from
from surd.review import queue
from surd.review import takedowns as log
from surd.review.db import NoDatabase, open_reader
from surd.stages import takedown as rules
from surd.stages.prune import Steps, finish, prunable
from surd.stages.prune import prune as delete
from surd.stages.release import manifest, releases, storage_options


def actor() -> str:
    """Who runs this command, as the logs record it (`cli:<user>`)."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name for this uid (a container): still recorded
        return "cli:unknown"


def add(
    sample: str | None = typer.Option(None, "--sample", help="a sample id"),
    item: str | None = typer.Option(None, "--item", help="SOURCE:ITEM_ID, e.g. civitai:12345"),
    creator: str | None = typer.Option(None, "--creator", help="SOURCE:NAME as the site shows it"),
    url: str | None = typer.Option(None, "--url", help="the item's page or image URL"),
    reason: str = typer.Option(..., "--reason", help="why (recorded, shown in `surd takedown list`)"),
    requested_by: str | None = typer.Option(None, "--requested-by", help="who asked"),
    as_json: bool = JSON,
    config: Path | None = CONFIG,
) -> None:
    """Take down a sample, an item, a creator's items or a URL: every stage drops it from now on
    (reason `takedown`), later crawls never fetch it, the next release leaves it out."""
    given = {k: v for k, v in {"sample": sample, "item": item, "creator": creator, "url": url}.items() if v}
    if len(given) != 1:
        raise fail("give exactly one of --sample, --item, --creator, --url")
    ((kind, value),) = given.items()
    s = settings(config)
    data = open_data(s)
    engine = queue.connect(s.review_database_url)
    try:
        entry = log.add(engine, kind, value, reason, actor(), requested_by)
    except ValueError as exc:
        raise fail(str(exc)) from None
    finally:
        engine.dispose()
    matcher = rules.load(s)
    rejected = rules.enforce(s, data, matcher)
    gone = rules.resolve(matcher, data)
    scrubbed = pipeline.scrub_takedowns(s)  # the stored bytes and prompts go now, not only later rows
    mine = {sid for sid, tid in gone.items() if tid == entry["id"]}
    holding = {p.name for p in releases(data) if mine & manifest(p)["fingerprint"].keys()}
    exports = [e["path"] for e in made_from(data.root, holding)]
    latest = releases(data)[-1:]
    fingerprint = manifest(latest[0])["fingerprint"] if latest else {}
    released = sum(1 for sid in fingerprint if gone.get(sid) == entry["id"])
    r: dict[str, Any] = {
        **entry,
        "queued_items_rejected": rejected,
        "rows_in_latest_release": released,
        "rows_emptied": scrubbed,
        "exports_holding_it": exports,
    }
    where = f" ({released} rows of {latest[0].name} go at the next `surd release create`)" if released else ""
    summary = (
        f"takedown {entry['id']} recorded: {kind} {value} ({entry['reason']}); "
        f"{rejected} queued items rejected{where}; stored content emptied: "
        f"{', '.join(f'{k}={v}' for k, v in scrubbed.items()) or 'none stored'}"
    )
    if exports:
        summary += "; exports made before that hold it (delete them): " + ", ".join(exports)
    if holding:
        held = ", ".join(sorted(holding))
        summary += f"; releases holding it: {held} (`surd release prune` once a newer one is made)"
    result(r, as_json, summary)


def list_(as_json: bool = JSON, config: Path | None = CONFIG) -> None:
    """Every takedown: what, why, at whose request, entered by whom, when."""
    s = settings(config)
    open_data(s, create=False)  # a reader: a missing data root is an error, never made
    try:
        engine = open_reader(s.review_database_url)
    except NoDatabase:
        result([], as_json, "no takedowns")
        return
    try:
        rows = log.entries(engine)
    finally:
        engine.dispose()
    lines = [
        f"{r['id']:>4}  {r['created_at']:%Y-%m-%d %H:%M}  {r['kind']:<7} "
        f"{(r['source'] + ':') if r['source'] else ''}{r['value']}  reason: {r['reason']}"
        f"{'  requested by: ' + r['requested_by'] if r['requested_by'] else ''}  by {r['actor']}"
        for r in rows
    ]
    result(rows, as_json, "\n".join(lines) or "no takedowns")


def prune(
    superseded_by: str = typer.Option(
        ..., "--superseded-by", metavar="VERSION", help="the release that replaces them"
    ),
    yes: bool = typer.Option(False, "--yes", help="delete without asking"),
    as_json: bool = JSON,
    config: Path | None = CONFIG,
) -> None:
    """Delete the releases older than VERSION that hold taken-down rows (locally and where
    published), after a confirmation; each deletion is recorded."""
    s = settings(config)
    data = open_data(s, create=False)
    opts = storage_options(s)
    step = Steps()  # the command's deletion steps, counted across both calls (kill tests)
    finished = finish(s, data, step, **opts)  # a killed prune's recorded intent, carried out first
    if finished:
        err.print(f"finished an interrupted prune of {', '.join(finished)}", highlight=False)
    try:
        doomed = prunable(s, data, superseded_by, **opts)
    except ValueError as exc:
        raise fail(str(exc)) from None
    if not doomed:
        result([], as_json, f"nothing to prune: no release before {superseded_by} holds taken-down rows")
        return
    for p in doomed:
        err.print(
            f"{p.release}: {p.taken_down_rows} taken-down rows; delete {', '.join(p.locations)}",
            highlight=False,
        )
    if not yes and not typer.confirm(f"delete {len(doomed)} releases for good?", err=True):
        raise typer.Abort()
    delete(s, data, superseded_by, doomed, actor(), step, **opts)
    r = [vars(p) for p in doomed]
    result(r, as_json, f"pruned {', '.join(p.release for p in doomed)} (superseded by {superseded_by})")


def register(app: typer.Typer) -> None:
    """`surd takedown add|list` (`surd release prune` is registered with the release commands)."""
    t = typer.Typer(
        help="Requests to remove content: recorded, enforced by every stage.", no_args_is_help=True
    )
    t.command("add")(add)
    t.command("list")(list_)
    app.add_typer(t, name="takedown")
