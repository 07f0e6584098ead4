"""Running the whole thing: `surd demo`, `surd replay serve` (`surd deploy …` comes from flows/,
through surd.app.engines)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import typer
from sqlalchemy.engine import make_url

from surd.app.cli.common import CONFIG, JSON, err, fail, open_data, out, settings
from surd.app.cli.data import print_status
from surd.app.cli.errors import Exit
from surd.app.cli.stages import Engine
from surd.app.demo import demo_config, demo_login
from surd.app.doctor import ROLES, diagnose, errors
from surd.app.engines import engine as orchestrated
from surd.settings import Settings
from surd.sources.replay import ReplaySite
from surd.status import status as compute
from surd.summary import plain


def replay_serve(port: int = typer.Option(8900, min=0, max=65535)) -> None:
    """Serve the recorded source responses on 127.0.0.1 (for crawls with --base-url)."""

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
        if engine is Engine.local:
            from surd.app.rebuild import rebuild  # the models: only for a rebuild

            result = rebuild(s, log=lambda line: out.print(line, highlight=False))
        else:
            result = orchestrated(engine.value)(cfg, True)
    finally:
        site.stop()
    _print_outputs(s, {**result, "review_login": demo_login(s)})


def _print_outputs(s: Settings, result: dict[str, Any]) -> None:

    out.rule("SURD demo finished")
    print_status(compute(s, open_data(s)))
    root = Path(s.data_root)
    lines = [
        f"tables:      {root / 'tables'}  (surd sql 'select * from images limit 5')",
        f"release:     {result.get('release')}  (dataset card: README.md inside)",
    ]
    if result.get("embed"):
        lines.append(f"embeddings:  {root / 'embeddings'}  ({plain(result['embed'])['model_id']})")
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


def load_env_file(path: Path) -> None:
    """KEY=VALUE lines (a Compose `.env`) into this process's environment; blanks and comments
    skipped, empty values left unset."""
    for line in path.read_text().splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key and not key.startswith("#") and value.strip():
            os.environ[key.strip()] = value.strip().strip("'\"")


def doctor(
    role: str = typer.Option("all", help=f"the process checked for: {', '.join(ROLES)}"),
    env_file: Path | None = typer.Option(None, "--env-file", help="read KEY=VALUE lines first (a .env)"),
    as_json: bool = JSON,
    config: Path | None = CONFIG,
) -> None:
    """Check a configuration as production runs it: one line per finding (ok, warning, error);
    exit 1 on any error. Workers, `review serve` and `deploy setup` refuse to start on one."""
    if role not in ROLES:
        raise fail(f"--role {role!r}: one of {', '.join(ROLES)}")
    if env_file is not None:
        if not env_file.exists():
            raise fail(f"--env-file {env_file} does not exist")
        load_env_file(env_file)
    findings = diagnose(settings(config), role)
    if as_json:
        print(json.dumps([vars(f) for f in findings], indent=1))
    else:
        for f in findings:
            out.print(f.line(), highlight=False, markup=False)
    bad = errors(findings)
    if bad:
        err.print(f"{len(bad)} error(s): fix them before production runs this", highlight=False)
        raise typer.Exit(Exit.PROBLEMS)


def register(app: typer.Typer) -> None:
    app.command()(doctor)
    replay_app = typer.Typer(help="The offline replay site.", no_args_is_help=True)
    replay_app.command("serve")(replay_serve)
    app.add_typer(replay_app, name="replay")
    app.command()(demo)
