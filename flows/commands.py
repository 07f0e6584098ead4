"""The orchestration layer's part of the command line, plugged into `surd` through entry points
(pyproject.toml; surd.app.engines): the Prefect engine of `surd rebuild` and `surd demo`, and the
`surd deploy …` commands. Prefect is imported only when one of them runs (seconds of start-up
that every other command must not pay)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import typer

from surd.app.cli.common import CONFIG, refuse_on_errors, settings
from surd.app.cli.errors import CliError, Exit
from surd.app.doctor import check_prefect


def rebuild(config: dict[str, Any], train: bool) -> dict[str, Any]:
    """The whole path as the Prefect flow (flows/rebuild.py) on these settings' overrides."""
    from flows.rebuild import rebuild as flow  # Prefect: only when it runs

    return flow(config=config, train=train)  # type: ignore[no-any-return]


def _server_or_exit(s: Any, role: str = "deploy") -> None:
    """A real Prefect server, reachable, or exit 4 with one line (never a temporary server that
    would be thrown away with what was set up on it); then the deploy role's other checks."""
    [finding] = check_prefect(required=True)
    if finding.level == "error":
        raise CliError(finding.message, Exit.SOURCE)
    refuse_on_errors(s, role)


def deploy_setup(config: Path | None = CONFIG) -> None:
    """Create the work pools (cpu, gpu) and global concurrency limits the deployments use, on the
    server PREFECT_API_URL names."""
    s = settings(config)
    _server_or_exit(s)
    from flows.deployments import setup  # Prefect: only when it runs

    print(json.dumps(setup(s), indent=1, default=str))


def deploy_serve(config: Path | None = CONFIG) -> None:
    """Serve every deployment from this process: schedules and event triggers included."""
    from flows.deployments import serve_all  # Prefect: only when it runs

    s = settings(config)
    if config is not None:
        os.environ["SURD_CONFIG"] = str(config.resolve())  # the flow runs read the same settings
    serve_all(s)


def deploy_render(
    out: Path | None = typer.Option(None, "--out", help="write here (default: print)"),
    config: Path | None = CONFIG,
) -> None:
    """Write prefect.yaml from the deployments' declaration and the settings (schedules, workdir)."""
    from flows.deployments import render_yaml  # Prefect: only when it runs

    text = render_yaml(settings(config))
    if out is None:
        print(text, end="")
    else:
        out.write_text(text)


def deploy_worker(
    pool: str = typer.Option(..., help="the work pool: cpu or gpu"),
    name: str | None = typer.Option(None, help="the worker's name (default: Prefect's)"),
    config: Path | None = CONFIG,
) -> None:
    """Check this machine for the pool's work (`surd doctor --role <pool>`), then become a Prefect
    process worker of that pool. The flow runs it starts inherit SURD_POOL=<pool>."""
    from flows.deployments import plans  # Prefect: only when it runs

    pools = sorted({p.pool for p in plans().values()})
    if pool not in pools:
        raise CliError(f"--pool {pool!r}: one of {', '.join(pools)}", Exit.USAGE)
    s = settings(config)
    _server_or_exit(s, role=pool)
    if config is not None:
        os.environ["SURD_CONFIG"] = str(config.resolve())
    os.environ["SURD_POOL"] = pool
    argv = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process"]
    os.execv(sys.executable, argv + (["--name", name] if name else []))


def register(app: typer.Typer) -> None:
    deploy_app = typer.Typer(help="Prefect deployments (needs PREFECT_API_URL).", no_args_is_help=True)
    deploy_app.command("setup")(deploy_setup)
    deploy_app.command("serve")(deploy_serve)
    deploy_app.command("render")(deploy_render)
    deploy_app.command("worker")(deploy_worker)
    app.add_typer(deploy_app, name="deploy")
