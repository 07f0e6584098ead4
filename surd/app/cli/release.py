"""`surd release …`: create, list, verify, export and publish dataset releases."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer

from storage.embeddings import EmbeddingStore
from storage.releases import approval, held
from storage.releases import publish as copy
from surd import pipeline
from surd.app import engines
from surd.app.cli import takedown
from surd.app.cli.common import CONFIG, JSON, err, fail, open_data, out, result, settings
from surd.app.cli.errors import Exit
from surd.app.cli.paths import release_path
from surd.exports import ExportRefused, SafetyFilter, export_release
from surd.sources.safety import parse_level
from surd.stages import changes
from surd.stages.release import manifest, releases, storage_options
from surd.stages.release import verify as check
from surd.summary import describe


class ExportFormat(StrEnum):
    imagefolder = "imagefolder"
    surd_adapter = "surd-adapter"


def create(as_json: bool = JSON, config: Path | None = CONFIG) -> None:
    """Release the accepted samples (nothing new if the accepted set did not change)."""

    s = settings(config)
    r = pipeline.release_info(s)
    announced = engines.announce(s)  # with a Prefect API: now; else the next `release` flow
    if announced is not None:
        r.announced = announced
        r.waiting = [v for v in r.waiting if v not in announced]
    result(r, as_json, describe("release", r))


def list_(as_json: bool = JSON, config: Path | None = CONFIG) -> None:
    """Every release: version, rows, shards, parent and folder."""

    rows = []
    for path in releases(open_data(settings(config), create=False)):
        m = manifest(path)
        state = "held" if held(path) else ("approved" if approval(path) else "out")
        rows.append(
            {"release": m["release"], "rows": m["rows"], "shards": len(m["shards"]), "parent": m["parent"]}
            | {"state": state, "held_for": (m.get("held") or {}).get("reasons", []), "path": str(path)}
        )
    if as_json:
        result(rows, True, "")
        return
    if not rows:
        err.print("no releases yet")
    for r in rows:
        parent = r["parent"] or "-"
        out.print(
            f"{r['release']}  {r['state']}  rows={r['rows']}  shards={r['shards']}  parent={parent}  "
            f"{r['path']}",
            highlight=False,
        )
        for why in r["held_for"] if r["state"] == "held" else []:
            out.print(f"    held: {why}", highlight=False)


def approve(
    version: str = typer.Argument(..., metavar="VERSION", help="the held release, vNNNN"),
    reason: str = typer.Option(..., "--reason", help="why it may go out (logged with your name)"),
    as_json: bool = JSON,
    config: Path | None = CONFIG,
) -> None:
    """Let a release the gate held go out: the approval is logged, then the release is published
    and announced once (so trained once), as any other."""
    s = settings(config)
    try:
        r = pipeline.approve(s, version, reason, takedown.actor())
    except LookupError as exc:
        raise fail(str(exc), Exit.DATA) from None
    except ValueError as exc:
        raise fail(str(exc)) from None
    announced = engines.announce(s)
    if announced is not None:
        r.announced = announced
        r.waiting = [v for v in r.waiting if v not in announced]
    result(r, as_json, f"{version} approved; " + describe("release", r))


def diff(
    old: str = typer.Argument(..., metavar="OLD", help="vNNNN"),
    new: str = typer.Argument("latest", metavar="NEW", help="vNNNN or latest"),
    to: Path | None = typer.Option(None, "--out", help="write every changed sample to this Parquet file"),
    as_json: bool = JSON,
    config: Path | None = CONFIG,
) -> None:
    """What changed from release OLD to NEW: samples added, removed (why) and changed (which columns)."""
    s = settings(config)
    a, b = release_path(s, old), release_path(s, new)
    why = manifest(b).get("removed_reasons") if manifest(b).get("parent") == a.name else None
    rows = changes.compare(a, b, why)
    if to is not None:
        changes.write(rows, to)
        err.print(f"{to}: {rows.num_rows} rows written", highlight=False)
    summary = changes.summary(rows) | {"from": a.name, "to": b.name}
    removed = ", ".join(f"{k} {v}" for k, v in summary["removed"].items()) or "none"
    changed = ", ".join(f"{k} {v}" for k, v in summary["changed"].items()) or "none"
    text = f"{a.name} → {b.name}: added {summary['added']}; removed {removed}; changed {changed}"
    result(summary, as_json, text)


def verify(
    version: str | None = typer.Argument(
        None, metavar="[VERSION]", help="vNNNN or latest; default: every release"
    ),
    latest: bool = typer.Option(False, "--latest", help="only the latest release"),
    config: Path | None = CONFIG,
) -> None:
    """Recompute every shard's sha256 and row count, of every release (or the one named); a
    damaged shard is named (exit 1)."""

    s = settings(config)
    if version is None and not latest:
        paths = releases(open_data(s, create=False))
        if not paths:
            raise fail("no release yet", Exit.DATA)
    else:
        paths = [release_path(s, "latest" if latest else version or "latest")]
    bad = 0
    for path in paths:
        problems = check(path)
        for p in problems:
            err.print(f"{path.name}: {p}", highlight=False, markup=False)
        bad += bool(problems)
        if not problems:
            out.print(f"{path.name}: ok", highlight=False)
    if bad:
        raise typer.Exit(Exit.PROBLEMS)


def export(
    version: str = typer.Argument("latest", metavar="VERSION", help="vNNNN or latest"),
    fmt: ExportFormat = typer.Option(ExportFormat.imagefolder, "--format", help="the layout to write"),
    to: Path = typer.Option(
        ..., "--out", help="folder to write (an earlier export there is swapped out whole)"
    ),
    force: bool = typer.Option(False, "--force", help="replace an --out that is not an earlier export"),
    layer: int = typer.Option(-1, help="LLM layer for surd-adapter's prompt2vec (1..L, -1 = last)"),
    llm: str | None = typer.Option(None, help="which embeddings (model id or preset); default: settings"),
    max_nsfw: str | None = typer.Option(
        None,
        "--max-nsfw",
        metavar="LEVEL",
        help="keep rows labelled at most LEVEL (0 safe, 1 suggestive, 2 mature)",
    ),
    keep_unlabelled: bool = typer.Option(
        False, help="with --max-nsfw: keep rows whose source gives no label"
    ),
    as_json: bool = JSON,
    config: Path | None = CONFIG,
) -> None:
    """Export a release for the paper's training code or Hugging Face's imagefolder loader."""
    from surd.models.profiles import llm_model_id  # torch: only to export embeddings

    s = settings(config)
    path = release_path(s, version)
    emb = None
    if fmt is ExportFormat.surd_adapter:
        data = open_data(s, create=False)
        emb = EmbeddingStore(data, llm_model_id(s, llm)).dir
        if not (emb / "meta.json").exists():
            sets = (
                sorted(p.name for p in data.embeddings_dir.glob("[!.]*"))
                if data.embeddings_dir.exists()
                else []
            )
            raise fail(
                f"no embeddings of {llm_model_id(s, llm)} under {data.embeddings_dir} (embedded: "
                f"{', '.join(sets) or 'none yet'}); run `surd embed --release {version} --llm …` first, or "
                "pass --llm with one of those",
                Exit.DATA,
            )
    try:
        safety = SafetyFilter(parse_level(max_nsfw) if max_nsfw is not None else None, keep_unlabelled)
    except ValueError as exc:
        raise fail(str(exc)) from None
    try:
        r = export_release(path, to, fmt.value, emb, layer, safety, force)
    except ExportRefused as exc:
        raise fail(str(exc)) from None
    except (ValueError, FileNotFoundError) as exc:
        raise fail(str(exc), Exit.DATA) from None
    left = f"; {r['left_out_by_nsfw']} left out by --max-nsfw" if max_nsfw is not None else ""
    result(r, as_json, f"exported {path.name} ({r['rows']} rows) to {r['imagefolder']}{left}")


def publish(
    version: str = typer.Argument("latest", metavar="VERSION", help="vNNNN or latest"),
    to: str | None = typer.Option(None, help="a path or URL (s3://…); default: release.location"),
    config: Path | None = CONFIG,
) -> None:
    """Copy a release to a local path or an object store (shards first, manifest last)."""

    s = settings(config)
    path = release_path(s, version)
    target = to or s.release.location
    if not target:
        raise fail("give --to or set SURD_RELEASE__LOCATION")
    out.print(f"{path.name} published to {copy(path, target, **storage_options(s))}", highlight=False)


def register(app: typer.Typer) -> None:
    release_app = typer.Typer(help="Dataset releases.", no_args_is_help=True)
    release_app.command("create")(create)
    release_app.command("list")(list_)
    release_app.command("verify")(verify)
    release_app.command("export")(export)
    release_app.command("publish")(publish)
    release_app.command("approve")(approve)
    release_app.command("diff")(diff)
    release_app.command("prune")(takedown.prune)
    app.add_typer(release_app, name="release")
