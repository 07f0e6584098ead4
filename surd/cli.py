"""`surd`: one command per stage, plus status, config, releases, the review UI and the demo."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
import typer
from rich.console import Console
from rich.table import Table

from surd.settings import Settings, SettingsError, load_settings

app = typer.Typer(
    help="Build, review, release and use the SURD dataset.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold request headers with API keys
)
config_app = typer.Typer(help="Settings.", no_args_is_help=True)
release_app = typer.Typer(help="Dataset releases.", no_args_is_help=True)
review_app = typer.Typer(help="The review queue.", no_args_is_help=True)
deploy_app = typer.Typer(help="Prefect deployments (needs PREFECT_API_URL).", no_args_is_help=True)
replay_app = typer.Typer(help="The offline replay site.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(release_app, name="release")
app.add_typer(review_app, name="review")
app.add_typer(deploy_app, name="deploy")
app.add_typer(replay_app, name="replay")
console = Console()
CONFIG = typer.Option(None, "--config", "-c", help="TOML settings file (else $SURD_CONFIG or ./surd.toml)")


def _settings(config: Path | None, **overrides: Any) -> Settings:
    try:
        return load_settings(config, **{k: v for k, v in overrides.items() if v is not None})
    except SettingsError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


def _progress(label: str) -> Any:
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    return Progress(
        SpinnerColumn(),
        TextColumn(f"{label}: " + "{task.completed} items"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def _run_stage(label: str, fn: Any, *args: Any) -> Any:
    with _progress(label) as bar:
        t = bar.add_task(label, total=None)
        return fn(*args, progress=lambda n: bar.advance(t, n))


@config_app.command("show")
def config_show(config: Path | None = CONFIG) -> None:
    """Print the effective settings, secrets masked."""
    console.print_json(json.dumps(_settings(config).provenance()))


@app.command()
def status(config: Path | None = CONFIG, as_json: bool = typer.Option(False, "--json")) -> None:
    """Items in, out, dropped by reason and pending, per stage."""
    from surd.pipeline import open_data
    from surd.status import status as compute

    s = _settings(config)
    st = compute(s, open_data(s))
    if as_json:
        print(json.dumps(st, indent=1))
        return
    _print_status(st)


def _print_status(st: dict[str, Any]) -> None:
    table = Table("stage", "in", "out", "dropped (by reason)", "pending", title=f"SURD at {st['data_root']}")
    rows = [(k, v) for k, v in st["stages"].items() if isinstance(v, dict) and "in" in v]
    rows += [(f"embeddings/{k}", v) for k, v in st["stages"]["embeddings"].items()]
    for name, v in rows:
        dropped = ", ".join(f"{r}={n}" for r, n in sorted(v["dropped"].items())) or "-"
        table.add_row(name, str(v["in"]), str(v["out"]), dropped, str(v["pending"]))
    console.print(table)
    for source, c in st.get("crawls", {}).items():
        console.print(
            f"crawl {source}: {c['crawl_id']} {'done' if c['done'] else 'unfinished'} "
            f"({c['stop_reason'] or 'in progress'}), robots {c['robots']}, "
            f"{'incremental' if c['incremental'] else 'full'} pass, {c['items']} items"
        )
    console.print(
        f"failed crawl pages: {st['crawl_pages_failed']}; latest release: "
        f"{st['stages']['release']['latest']}; adapter runs: {len(st['stages']['adapter_runs'])}"
    )


@app.command()
def crawl(
    source: str = typer.Argument(..., help="civitai | lexica | sdonline"),
    limit: int | None = typer.Option(None, help="max raw items this crawl"),
    base_url: str | None = typer.Option(None, help="a mirror, proxy or replay server"),
    full: bool = typer.Option(False, help="a full pass, not one that stops at known items"),
    config: Path | None = CONFIG,
) -> None:
    """One pass over a source into the raw items table: resumes an unfinished pass, else an
    incremental pass that stops where it reaches items it already has."""
    from surd import pipeline
    from surd.crawl import SOURCES

    if source not in SOURCES:
        console.print(f"[red]unknown source {source!r}; valid: {', '.join(SOURCES)}[/red]")
        raise typer.Exit(2)
    over: dict[str, Any] = {}
    if base_url:
        over["sources"] = {source: {"base_url": base_url}}
    if limit:
        over["crawl"] = {"limit": limit}
    with _progress(f"crawl {source}") as bar:
        t = bar.add_task(source, total=None)
        result = pipeline.crawl(_settings(config, **over), source, lambda n: bar.advance(t, n), full)
    console.print(result)


images_app = typer.Typer(help="The images stage.")
app.add_typer(images_app, name="images")


@images_app.callback(invoke_without_command=True)
def images(ctx: typer.Context, config: Path | None = CONFIG) -> None:
    """Fetch, validate, normalise and deduplicate the images of new raw items."""
    if ctx.invoked_subcommand is not None:
        return
    from surd import pipeline

    console.print(_run_stage("images", pipeline.images, _settings(config)))


@images_app.command("retry")
def images_retry(
    reason: list[str] = typer.Option(
        None,
        "--reason",
        help="reason prefix, e.g. http_503 (repeatable); "
        "default: timeouts, connection errors, blocks, 429 and 5xx",
    ),
    config: Path | None = CONFIG,
) -> None:
    """Fetch again only the items that failed."""
    from surd import pipeline

    console.print(_run_stage("retry", pipeline.images_retry, _settings(config), reason or None))


@app.command()
def caption(config: Path | None = CONFIG) -> None:
    """Caption new images with BLIP."""
    from surd import pipeline

    console.print(_run_stage("captions", pipeline.captions, _settings(config)))


@app.command("clip-filter")
def clip_filter(config: Path | None = CONFIG) -> None:
    """Score new captions with CLIP and keep those where CLIP prefers the simple prompt."""
    from surd import pipeline

    console.print(_run_stage("clip", pipeline.clip_filter, _settings(config)))


@review_app.command("enqueue")
def review_enqueue(config: Path | None = CONFIG) -> None:
    """Enqueue CLIP-kept samples (and apply the auto-review policy, if one is set)."""
    from surd import pipeline

    console.print(pipeline.review(_settings(config)))


@review_app.command("serve")
def review_serve(
    config: Path | None = CONFIG,
    host: str | None = None,
    port: int | None = None,
    workers: int = typer.Option(1, min=1, help="server processes (share one database)"),
) -> None:
    """Serve the review web app and its JSON API."""
    import os
    import secrets

    import uvicorn

    from surd.review import queue

    s = _settings(config)
    queue.connect(s.review_database_url).dispose()  # migrate once, before any worker starts
    if config is not None:
        os.environ["SURD_CONFIG"] = str(config)
    if workers > 1 and s.review.session_secret is None:
        # every worker must sign sessions with the same key; it lives only in this process tree
        os.environ["SURD_REVIEW__SESSION_SECRET"] = secrets.token_hex(32)
    uvicorn.run(
        "surd.review.app:from_env",
        factory=True,
        host=host or s.review.host,
        port=port or s.review.port,
        workers=workers,
        log_level="warning",
    )


@review_app.command("add-steward")
def add_steward(
    name: str,
    role: str = typer.Option("steward", help="steward | admin"),
    password: str = typer.Option(
        ..., prompt=True, hide_input=True, confirmation_prompt=True, envvar="SURD_NEW_STEWARD_PASSWORD"
    ),
    token: bool = typer.Option(False, "--token", help="also create an API token (shown once)"),
    config: Path | None = CONFIG,
) -> None:
    """Create or reset a steward account (and, with --token, an API bearer token)."""
    from surd.review import auth, queue

    s = _settings(config)
    engine = queue.connect(s.review_database_url)
    try:
        auth.add_steward(engine, name, password, role)
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    console.print(f"steward {name} ({role}) saved")
    if token:
        console.print(f"API token (shown once): {auth.new_token(engine, name)}", soft_wrap=True)


@review_app.command("export")
def review_export(
    out: Path = typer.Argument(..., help="a .parquet or .jsonl file"),
    what: str = typer.Option("outcomes", help="outcomes (one row per item) | audit (every decision)"),
    config: Path | None = CONFIG,
) -> None:
    """Export every item's outcome, or the append-only decision log."""
    from surd.review import export, queue

    if what not in ("outcomes", "audit") or out.suffix not in (".parquet", ".jsonl"):
        console.print("[red]--what is outcomes or audit, and OUT ends in .parquet or .jsonl[/red]")
        raise typer.Exit(2)
    engine = queue.connect(_settings(config).review_database_url)
    rows = queue.export_rows(engine, what)
    n = export.write_parquet(rows, out) if out.suffix == ".parquet" else export.write_jsonl(rows, out)
    console.print(f"{n} rows → {out}")


@release_app.command("create")
def release_create(config: Path | None = CONFIG) -> None:
    """Release the accepted samples (nothing new if the accepted set did not change)."""
    from surd import pipeline

    console.print(pipeline.release(_settings(config)) or "no accepted samples yet")


@release_app.command("list")
def release_list(config: Path | None = CONFIG) -> None:
    from surd.pipeline import open_data
    from surd.release import manifest, releases

    for path in releases(open_data(_settings(config))):
        m = manifest(path)
        console.print(
            f"{m['release']}  rows={m['rows']}  shards={len(m['shards'])}  parent={m['parent']}  {path}"
        )


@release_app.command("verify")
def release_verify(version: str = typer.Argument("latest"), config: Path | None = CONFIG) -> None:
    """Recompute every shard's sha256 and row count; a damaged shard is named (exit 1)."""
    from surd.release import verify

    _, path = _release_path(config, version)
    problems = verify(path)
    for p in problems:
        console.print(f"[red]{p}[/red]")
    console.print("ok" if not problems else f"{len(problems)} problem(s)")
    raise typer.Exit(1 if problems else 0)


def _release_path(config: Path | None, version: str) -> tuple[Settings, Path]:
    from surd.pipeline import open_data
    from surd.release import releases

    s = _settings(config)
    data = open_data(s)
    rels = releases(data)
    path = rels[-1] if version == "latest" and rels else data.releases_dir / version
    if not (path / "manifest.json").exists():
        console.print(f"[red]no release {version} under {data.releases_dir}[/red]")
        raise typer.Exit(2)
    return s, path


@release_app.command("export")
def release_export(
    version: str = typer.Argument("latest", help="vNNNN or latest"),
    fmt: str = typer.Option("imagefolder", "--format", help="imagefolder | surd-adapter"),
    out: Path = typer.Option(..., help="folder to write (replaced atomically)"),
    layer: int = typer.Option(-1, help="LLM layer for surd-adapter's prompt2vec (1..L, -1 = last)"),
    llm: str | None = typer.Option(None, help="which embeddings (model id or preset); default: settings"),
    config: Path | None = CONFIG,
) -> None:
    """Export a release for the paper's training code or Hugging Face's imagefolder loader."""
    from surd.embed import EmbeddingStore
    from surd.exports import export_release
    from surd.models.profiles import llm_model_id
    from surd.pipeline import open_data

    s, path = _release_path(config, version)
    emb = EmbeddingStore(open_data(s), llm_model_id(s, llm)).dir if fmt == "surd-adapter" else None
    try:
        console.print(export_release(path, out, fmt, emb, layer))
    except (ValueError, FileNotFoundError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


@release_app.command("publish")
def release_publish(
    version: str = typer.Argument("latest", help="vNNNN or latest"),
    to: str | None = typer.Option(None, help="a path or URL (s3://…); default: release.location"),
    config: Path | None = CONFIG,
) -> None:
    """Copy a release to a local path or an object store (shards first, manifest last)."""
    from storage.releases import publish
    from surd.release import storage_options

    s, path = _release_path(config, version)
    target = to or s.release.location
    if not target:
        console.print("[red]give --to or set SURD_RELEASE__LOCATION[/red]")
        raise typer.Exit(2)
    console.print(publish(path, target, **storage_options(s)))


@app.command()
def embed(
    release: str = typer.Option("latest", help="vNNNN or latest"),
    llm: str | None = typer.Option(None, help="tiny | llama-7b | llama-13b | llama-33b | a hub id"),
    config: Path | None = CONFIG,
) -> None:
    """Per-layer mean-pooled LLM states of every simple prompt of a release."""
    from surd import pipeline

    s, path = _release_path(config, release)
    console.print(_run_stage("embed", pipeline.embed, s, str(path), llm))


def _run_path(s: Settings, run: str) -> Path:
    from surd import pipeline

    path = Path(run) if Path(run).is_dir() else pipeline.open_data(s).runs_dir / run
    if not path.is_dir():
        runs = sorted(p.name for p in pipeline.open_data(s).runs_dir.glob("*") if p.is_dir())
        console.print(f"[red]no adapter run {run}; runs: {', '.join(runs) or 'none'}[/red]")
        raise typer.Exit(2)
    return path


@app.command()
def train(
    release: str = typer.Option("latest", help="vNNNN or latest"),
    llm: str | None = typer.Option(None, help="the embeddings' LLM (default: settings)"),
    config: Path | None = CONFIG,
) -> None:
    """Train (or resume) the SUR-adapter on a release and one embedding layer."""
    from surd import pipeline
    from surd.models.profiles import llm_model_id

    s, path = _release_path(config, release)
    out = pipeline.train(
        s, str(path), llm_model_id(s, llm), log=lambda r: console.print(r) if r["step"] % 50 == 0 else None
    )
    console.print(out)


@app.command()
def evaluate(
    run: str = typer.Argument(..., help="a run name under runs/ or its path"), config: Path | None = CONFIG
) -> None:
    """Evaluate a trained adapter: Action, Color, Counting suites; report, grid and judging pairs."""
    from surd import pipeline

    s = _settings(config)
    out = pipeline.evaluate(s, str(_run_path(s, run)), progress=console.print)
    console.print(Path(out["report"]).read_text())


@app.command()
def generate(
    prompt: str,
    run: str = typer.Option(..., help="a run name under runs/ or its path"),
    out: Path = typer.Option(Path("generated"), help="folder for the PNGs"),
    n: int = typer.Option(1, min=1),
    seed: int = 0,
    steps: int = typer.Option(30, min=1),
    baseline: bool = typer.Option(False, help="also the base model's image from the same seed"),
    config: Path | None = CONFIG,
) -> None:
    """Generate images of a prompt with a trained adapter."""
    from surd.adapter_stage import generate_images

    s = _settings(config)
    for path in generate_images(s, _run_path(s, run), prompt, out, n, seed, steps, baseline):
        console.print(str(path))


@deploy_app.command("setup")
def deploy_setup(config: Path | None = CONFIG) -> None:
    """Create the work pools (cpu, gpu) and global concurrency limits the deployments use."""
    from flows.deployments import setup

    console.print(setup(_settings(config)))


@deploy_app.command("serve")
def deploy_serve(config: Path | None = CONFIG) -> None:
    """Serve every deployment from this process: schedules and event triggers included."""
    import os

    from flows.deployments import serve_all

    s = _settings(config)
    if config is not None:
        os.environ["SURD_CONFIG"] = str(config.resolve())  # the flow runs read the same settings
    serve_all(s)


@app.command()
def sql(query: str, config: Path | None = CONFIG) -> None:
    """Run SQL over the DuckDB catalog (a view per table and release)."""
    from storage.catalog import connect
    from surd.pipeline import open_data

    con = connect(open_data(_settings(config)))
    console.print(con.sql(query).fetchall())


@app.command()
def rebuild(
    config: Path | None = CONFIG,
    engine: str = typer.Option("prefect", help="prefect (the flow) | local (in-process)"),
    train: bool = typer.Option(True, help="also embed, train and evaluate"),
) -> None:
    """Run the whole path on the current settings."""
    s = _settings(config)
    if engine == "local":
        from surd import pipeline

        pipeline.rebuild(s, train_adapter=train, log=console.print)
    elif engine == "prefect":
        from flows.rebuild import rebuild as flow

        flow(config={}, train=train)
    else:
        console.print("[red]engine must be prefect or local[/red]")
        raise typer.Exit(2)


@replay_app.command("serve")
def replay_serve(port: int = 8900) -> None:
    """Serve the recorded source responses on 127.0.0.1 (for crawls with --base-url)."""
    import time

    from surd.replay import ReplaySite

    site = ReplaySite().start(port=port)
    console.print(f"replay site on {site.base_url}: {json.dumps(site.source_urls())}")
    while True:
        time.sleep(3600)


@app.command()
def demo(
    data_root: Path = typer.Option(Path("data/demo"), help="where the demo writes"),
    engine: str = typer.Option("prefect", help="prefect | local"),
    replay_port: int = typer.Option(
        8917,
        help="loopback port of the replay site; keep it "
        "the same when resuming, since stored image URLs name it",
    ),
) -> None:
    """The whole path offline: replay site → … → trained tiny adapter and its evaluation."""
    import os

    from surd.demo import demo_config
    from surd.replay import ReplaySite

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        site = ReplaySite().start(port=replay_port)
    except OSError as exc:
        console.print(
            f"[red]cannot serve the replay site on 127.0.0.1:{replay_port}: {exc}; "
            "pick another with --replay-port[/red]"
        )
        raise typer.Exit(2) from None
    try:
        cfg = demo_config(data_root, site)
        s = _settings(None, **cfg)
        console.print(f"replay site: {site.base_url}; data root: {data_root}")
        if engine == "prefect":
            from flows.rebuild import rebuild as flow

            out = flow(config=cfg, train=True)
        else:
            from surd import pipeline

            out = pipeline.rebuild(s, log=console.print)
    finally:
        site.stop()
    from surd.demo import demo_login

    _print_outputs(s, {**out, "review_login": demo_login(s)})


def _print_outputs(s: Settings, out: dict[str, Any]) -> None:
    console.rule("SURD demo finished")
    from surd.pipeline import open_data
    from surd.status import status as compute

    _print_status(compute(s, open_data(s)))
    root = Path(s.data_root)
    console.print(f"tables:      {root / 'tables'}  (surd sql 'select * from images limit 5')")
    console.print(f"release:     {out.get('release')}  (dataset card: README.md inside)")
    if out.get("embed"):
        console.print(f"embeddings:  {root / 'embeddings'}  ({out['embed']['model_id']})")
    if out.get("train"):
        console.print(f"adapter run: {out['train']['run_dir']}")
        console.print(f"evaluation:  {out['evaluate']['report']}")
    from sqlalchemy.engine import make_url

    queue_url = make_url(s.review_database_url).render_as_string(hide_password=True)
    console.print(f"review queue: {queue_url}")
    login = out.get("review_login")
    console.print(
        f"review UI:    SURD_DATA_ROOT={root} surd review serve  → http://127.0.0.1:{s.review.port}/"
    )
    if login:
        console.print(
            f"              log in as {login['name']} / {login['password']} (admin; a demo account made "
            f"for this data root; {login['open']} item(s) left for stewards)",
            soft_wrap=True,
        )
    console.print(f"status:      SURD_DATA_ROOT={root} surd status")


def main() -> None:
    from surd.models.profiles import ModelUnavailable

    try:
        code = app(standalone_mode=False)
        if isinstance(code, int):
            sys.exit(code)
    except (SettingsError, ModelUnavailable) as exc:
        console.print(f"[red]{exc}[/red]")
        sys.exit(2)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        sys.exit(130)


if __name__ == "__main__":
    main()
