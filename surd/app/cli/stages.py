"""The data path's commands: crawl, one per declared batch stage (surd.chain: images, caption,
clip-filter, near-duplicates, …), embed, train, evaluate, generate, rebuild. Each shows progress on
stderr and prints its result on stdout (a summary, or --json)."""

from __future__ import annotations

import time
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer

from surd import chain, pipeline
from surd.app.cli.common import CONFIG, JSON, err, out, result, settings
from surd.app.cli.paths import release_path, run_path
from surd.app.cli.progress import progress
from surd.app.engines import engine as orchestrated
from surd.settings import Settings
from surd.sources import SOURCES
from surd.stages.base import Stage
from surd.summary import describe

Source = StrEnum("Source", {s: s for s in SOURCES})  # type: ignore[misc]


class Engine(StrEnum):
    prefect = "prefect"
    local = "local"


def _stage(label: str, fn: Any, s: Settings, *args: Any, total: int) -> Any:
    """Run a stage with its total known before it starts (its pending items)."""
    with progress(label, total) as meter:
        return fn(s, *args, progress=meter.advance)


def stage_command(stage: type[Stage[Any]]) -> Any:
    """The command of a declared batch stage: its pending items with progress, then its summary."""
    name, label = stage.name, stage.name.replace("_", " ")

    def command(as_json: bool = JSON, config: Path | None = CONFIG) -> None:
        s = settings(config)
        total = pipeline.pending_total(s, name)
        r = _stage(label, lambda s, progress: pipeline.run(s, name, progress), s, total=total)
        result(r, as_json, describe(name, r))

    command.__doc__ = f"{(stage.__doc__ or name).strip().splitlines()[0]} Writes the {name} table."
    command.__name__ = name
    return command


def crawl(
    source: Source = typer.Argument(..., metavar="SOURCE", help="the site to crawl"),
    limit: int | None = typer.Option(None, min=1, help="max raw items this crawl"),
    base_url: str | None = typer.Option(None, help="a mirror, proxy or replay server"),
    full: bool = typer.Option(False, help="a full pass, not one that stops at known items"),
    as_json: bool = JSON,
    config: Path | None = CONFIG,
) -> None:
    """One pass over a source into the raw items table: resumes an unfinished pass, else an
    incremental pass that stops where it reaches items it already has. A pass that stops on a
    failure exits 4, naming the reason and the URL; the next run resumes there."""

    over: dict[str, Any] = {}
    if base_url:
        over["sources"] = {source.value: {"base_url": base_url}}
    if limit:
        over["crawl"] = {"limit": limit}
    s = settings(config, **over)
    with progress(f"crawl {source.value}", steps_unit="pages") as meter:

        def polite_sleep(seconds: float) -> None:
            if seconds >= 0.5:
                meter.wait(f"waiting {seconds:.1f} s (politeness)")
            time.sleep(seconds)

        r = pipeline.crawl(s, source.value, meter.advance, full, sleep=polite_sleep)
    result(r, as_json, describe("crawl", r))


def images_retry(
    reason: list[str] = typer.Option(
        None,
        "--reason",
        help="reason prefix, e.g. http_503 (repeatable); "
        "default: timeouts, connection errors, blocks, 429 and 5xx",
    ),
    as_json: bool = JSON,
    config: Path | None = CONFIG,
) -> None:
    """Fetch again only the items that failed."""

    s = settings(config)
    total = pipeline.retry_total(s, reason or None)
    r = _stage("retry", pipeline.images_retry, s, reason or None, total=total)
    result(r, as_json, describe("images", r))


SUBCOMMANDS = {"images": [("retry", images_retry)]}  # a stage's commands beside its own run


def embed(
    release: str = typer.Option("latest", help="vNNNN or latest"),
    llm: str | None = typer.Option(None, help="tiny | llama-7b | llama-13b | llama-33b | a hub id"),
    as_json: bool = JSON,
    config: Path | None = CONFIG,
) -> None:
    """Per-layer mean-pooled LLM states of every simple prompt of a release."""

    s = settings(config)
    path = str(release_path(s, release))
    total = pipeline.embed_total(s, path, llm)
    r = _stage("embed", pipeline.embed, s, path, llm, total=total)
    result(r, as_json, describe("embed", r))


def recheck(
    budget: int | None = typer.Option(None, help="items to re-check (default: release.recheck.budget)"),
    as_json: bool = JSON,
    config: Path | None = CONFIG,
) -> None:
    """Ask the sources, politely, whether the next items of the latest release are still there;
    an item gone for good (the source says so, or its image answers 404/410 twice) leaves the next
    release as `source_removed`."""
    s = settings(config)
    r = pipeline.recheck(s, budget)
    result(r, as_json, describe("recheck", r))


def train(
    release: str = typer.Option("latest", help="vNNNN or latest"),
    llm: str | None = typer.Option(None, help="the embeddings' LLM (default: settings)"),
    as_json: bool = JSON,
    config: Path | None = CONFIG,
) -> None:
    """Train (or resume) the SUR-adapter on a release and one embedding layer."""
    from surd.app import training  # torch, diffusers: only to train
    from surd.models.profiles import llm_model_id  # torch: only to train

    s = settings(config)
    path = release_path(s, release)
    with progress("train", s.adapter.steps, unit="steps") as meter:
        last = 0

        def log(row: dict[str, Any]) -> None:
            nonlocal last
            meter.advance(int(row["step"]) - last)
            last = int(row["step"])

        r = training.train(s, str(path), llm_model_id(s, llm), log=log)
    result(r, as_json, describe("train", r))


def evaluate(
    run: str = typer.Argument(..., metavar="RUN", help="a run name under runs/ or its path"),
    report_only: bool = typer.Option(
        False, "--report-only", help="only rewrite the report with the stewards' judgements so far"
    ),
    as_json: bool = JSON,
    config: Path | None = CONFIG,
) -> None:
    """Evaluate a trained adapter: Action, Color, Counting suites; report beside the paper's figures,
    grid and judging pairs. With --report-only, bring the report up to date with /judge."""
    from surd.app import training  # torch, diffusers: only to evaluate

    s = settings(config)
    path = str(run_path(s, run))
    if report_only:
        r = training.report_run(s, path)
    else:
        r = training.evaluate_run(s, path, progress=lambda line: err.print(line, highlight=False))
    if as_json:
        result(r, True, "")
    else:
        out.print(Path(r["report"]).read_text(), highlight=False, markup=False)


def generate(
    prompt: str,
    run: str = typer.Option(..., help="a run name under runs/ or its path"),
    out_dir: Path = typer.Option(Path("generated"), "--out", help="folder for the PNGs"),
    n: int = typer.Option(1, min=1),
    seed: int = 0,
    steps: int = typer.Option(30, min=1),
    baseline: bool = typer.Option(False, help="also the base model's image from the same seed"),
    config: Path | None = CONFIG,
) -> None:
    """Generate images of a prompt with a trained adapter."""
    from surd.app.training import generate_images  # torch, diffusers: only to generate

    s = settings(config)
    for path in generate_images(s, run_path(s, run), prompt, out_dir, n, seed, steps, baseline):
        out.print(str(path), highlight=False)


def rebuild(
    config: Path | None = CONFIG,
    engine: Engine = typer.Option(Engine.prefect, help="prefect: the flow; local: in-process"),
    train: bool = typer.Option(True, help="also embed, train and evaluate"),
) -> None:
    """Run the whole path on the current settings (a site down: the rest runs, then exit 4)."""
    s = settings(config)
    if engine is Engine.local:
        from surd.app.rebuild import rebuild as in_process  # the models: only for a rebuild

        in_process(s, train_adapter=train, log=lambda line: err.print(line, highlight=False))
        return
    orchestrated(engine.value)({}, train)  # a crawl that failed raises CrawlFailed (exit 4) at the end


def register(app: typer.Typer) -> None:
    app.command()(crawl)
    for stage in chain.PIPELINE:  # one command per declared stage, in the pipeline's order
        command, name = stage_command(stage), chain.PIPELINE.command(stage)
        if stage.name in SUBCOMMANDS:
            group = typer.Typer(help=command.__doc__)
            group.callback(invoke_without_command=True)(_with_ctx(command))
            for sub, fn in SUBCOMMANDS[stage.name]:
                group.command(sub)(fn)
            app.add_typer(group, name=name)
        else:
            app.command(name)(command)
    app.command()(recheck)
    app.command()(embed)
    app.command()(train)
    app.command()(evaluate)
    app.command()(generate)
    app.command()(rebuild)


def _with_ctx(command: Any) -> Any:
    """A stage's command as a group's callback: it runs only when no subcommand is asked for."""

    def callback(ctx: typer.Context, as_json: bool = JSON, config: Path | None = CONFIG) -> None:
        if ctx.invoked_subcommand is None:
            command(as_json=as_json, config=config)

    callback.__doc__ = command.__doc__
    return callback
