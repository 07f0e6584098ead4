"""Running the whole thing: `surd demo`, `surd deploy …` (Prefect), `surd replay serve`."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import typer
from sqlalchemy.engine import make_url

from surd.cli.common import CONFIG, err, fail, open_data, out, settings
from surd.cli.data import print_status
from surd.cli.stages import Engine
from surd.settings import Settings


def deploy_setup(config: Path | None = CONFIG) -> None:
    """Create the work pools (cpu, gpu) and global concurrency limits the deployments use."""
    from flows.deployments import setup

    print(json.dumps(setup(settings(config)), indent=1, default=str))


def deploy_serve(config: Path | None = CONFIG) -> None:
    """Serve every deployment from this process: schedules and event triggers included."""
    from flows.deployments import serve_all

    s = settings(config)
    if config is not None:
        os.environ["SURD_CONFIG"] = str(config.resolve())  # the flow runs read the same settings
    serve_all(s)


def replay_serve(port: int = typer.Option(8900, min=0, max=65535)) -> None:
    """Serve the recorded source responses on 127.0.0.1 (for crawls with --base-url)."""
    from surd.replay import ReplaySite

    site = ReplaySite().start(port=port)
    out.print(f"replay site on {site.base_url}: {json.dumps(site.source_urls())}", highlight=False)
    while True:
        time.sleep(3600)


def demo(
    data_root: Path = typer.Option(Path("data/demo"), help="where the demo writes"),
    engine: Engine = typer.Option(Engine.prefect, help="prefect: the flow; local: in-process"),
    replay_port: int = typer.Option(
        8917,
        min=0,
        max=65535,
        help="loopback port of the replay site; keep it the same when resuming, since stored image "
        "URLs name it",
    ),
) -> None:
    """The whole path offline: replay site → … → trained tiny adapter and its evaluation."""
    from surd.demo import demo_config, demo_login
    from surd.replay import ReplaySite

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        site = ReplaySite().start(port=replay_port)
    except OSError as exc:
        raise fail(
            f"cannot serve the replay site on 127.0.0.1:{replay_port}: {exc}; pick another with --replay-port"
        ) from None
    try:
        cfg = demo_config(data_root, site)
        s = settings(None, **cfg)
        err.print(f"replay site: {site.base_url}; data root: {data_root}", highlight=False)
        if engine is Engine.prefect:
            from flows.rebuild import rebuild as flow

            result = flow(config=cfg, train=True)
        else:
            from surd import pipeline

            result = pipeline.rebuild(s, log=lambda line: out.print(line, highlight=False))
    finally:
        site.stop()
    _print_outputs(s, {**result, "review_login": demo_login(s)})


def _print_outputs(s: Settings, result: dict[str, Any]) -> None:
    from surd.status import status as compute

    out.rule("SURD demo finished")
    print_status(compute(s, open_data(s)))
    root = Path(s.data_root)
    lines = [
        f"tables:      {root / 'tables'}  (surd sql 'select * from images limit 5')",
        f"release:     {result.get('release')}  (dataset card: README.md inside)",
    ]
    if result.get("embed"):
        lines.append(f"embeddings:  {root / 'embeddings'}  ({result['embed']['model_id']})")
    if result.get("train"):
        lines.append(f"adapter run: {result['train']['run_dir']}")
        lines.append(f"evaluation:  {result['evaluate']['report']}")
    queue_url = make_url(s.review_database_url).render_as_string(hide_password=True)
    lines.append(f"review queue: {queue_url}")
    lines.append(
        f"review UI:    SURD_DATA_ROOT={root} surd review serve  → http://127.0.0.1:{s.review.port}/"
    )
    login = result.get("review_login")
    if login:
        lines.append(
            f"              log in as {login['name']} / {login['password']} (admin; a demo account made "
            f"for this data root; {login['open']} item(s) left for stewards)"
        )
    lines.append(f"status:      SURD_DATA_ROOT={root} surd status")
    for line in lines:
        out.print(line, highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    deploy_app = typer.Typer(help="Prefect deployments (needs PREFECT_API_URL).", no_args_is_help=True)
    deploy_app.command("setup")(deploy_setup)
    deploy_app.command("serve")(deploy_serve)
    app.add_typer(deploy_app, name="deploy")
    replay_app = typer.Typer(help="The offline replay site.", no_args_is_help=True)
    replay_app.command("serve")(replay_serve)
    app.add_typer(replay_app, name="replay")
    app.command()(demo)
