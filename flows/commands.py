"""The orchestration layer's part of the command line, plugged into `surd` through entry points
(pyproject.toml; surd.app.engines): the Prefect engine of `surd rebuild` and `surd demo`, and the
`surd deploy …` commands. Prefect is imported only when one of them runs (seconds of start-up
that every other command must not pay)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import typer

from surd.app.cli.common import CONFIG, settings


def rebuild(config: dict[str, Any], train: bool) -> dict[str, Any]:
    """The whole path as the Prefect flow (flows/rebuild.py) on these settings' overrides."""
    from flows.rebuild import rebuild as flow  # Prefect: only when it runs

    return flow(config=config, train=train)  # type: ignore[no-any-return]


def deploy_setup(config: Path | None = CONFIG) -> None:
    """Create the work pools (cpu, gpu) and global concurrency limits the deployments use."""
    from flows.deployments import setup  # Prefect: only when it runs

    print(json.dumps(setup(settings(config)), indent=1, default=str))


def deploy_serve(config: Path | None = CONFIG) -> None:
    """Serve every deployment from this process: schedules and event triggers included."""
    from flows.deployments import serve_all  # Prefect: only when it runs

    s = settings(config)
    if config is not None:
        os.environ["SURD_CONFIG"] = str(config.resolve())  # the flow runs read the same settings
    serve_all(s)


def register(app: typer.Typer) -> None:
    deploy_app = typer.Typer(help="Prefect deployments (needs PREFECT_API_URL).", no_args_is_help=True)
    deploy_app.command("setup")(deploy_setup)
    deploy_app.command("serve")(deploy_serve)
    app.add_typer(deploy_app, name="deploy")
