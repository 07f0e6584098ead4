"""The deployments, declared once: what `surd deploy serve` serves, what `surd deploy render`
writes as `prefect.yaml` (for `prefect deploy --all` and pool workers), and what `surd deploy setup`
prepares on the server. Schedules come from the settings (`deploy.*_cron`), pools from here and
from each stage's declaration (surd.chain): `tests/flows/test_deployments.py` checks the committed
`prefect.yaml` is what `render` writes.

    rebuild    cron (deploy.rebuild_cron)   crawl → declared stages → review queue → release (pool cpu)
    stages/gpu run by the rebuild           the declared stages that need a GPU (captions, CLIP, …)
    release    cron (deploy.release_cron)   release what stewards decided since; announce releases
    embed      on surd.release.published    per-layer LLM states of the new release
    train      on surd.embeddings.completed the SUR-adapter (parameters: layer, base model)
    evaluate   on surd.adapter.trained      suites, report, judging pairs
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import Flow
from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger
from prefect.schedules import Cron

from flows.rebuild import HOME_POOL, rebuild, release_flow, release_limit, stages_flow
from flows.training import embed_flow, evaluate_flow, train_flow
from surd import chain
from surd.settings import Settings
from surd.sources import SOURCES

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Plan:
    """One deployment: its flow, work pool, schedule (a `deploy` setting) or triggering event with
    the parameters rendered from it, fixed parameters, and a line for people."""

    flow: Flow[..., Any]
    pool: str
    description: str
    cron: str | None = None  # the name of the DeploySettings field holding its schedule
    event: str | None = None
    from_event: dict[str, str] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)


def plans() -> dict[str, Plan]:
    """Every deployment by its full name (`flow/deployment`)."""
    out = {
        "rebuild/rebuild": Plan(
            rebuild,
            HOME_POOL,
            "crawl → declared stages → review queue → release (weekly); the release event trains",
            cron="rebuild_cron",
            parameters={"train": False},
        ),
        "release/release": Plan(
            release_flow,
            "cpu",
            "release what stewards decided since the last release; announce any release not yet announced",
            cron="release_cron",
        ),
    }
    for pool in sorted({s.pool for s in chain.PIPELINE} - {HOME_POOL}):
        names = [s.name for s in chain.PIPELINE if s.pool == pool]
        out[f"stages/{pool}"] = Plan(
            stages_flow,
            pool,
            f"the declared stages that run on pool {pool} ({', '.join(names)}), for the rebuild",
        )
    out |= {
        "embed/embed": Plan(
            embed_flow,
            "gpu",
            "per-layer LLM states of every simple prompt of a new release",
            event="surd.release.published",
            from_event={"release": "{{ event.payload.path }}"},
        ),
        "train/train": Plan(
            train_flow,
            "gpu",
            "the SUR-adapter on the release and one embedding layer",
            event="surd.embeddings.completed",
            from_event={
                "release": "{{ event.payload.release }}",
                "llm_model_id": "{{ event.payload.llm_model_id }}",
            },
        ),
        "evaluate/evaluate": Plan(
            evaluate_flow,
            "gpu",
            "Action, Color and Counting suites; report, grid and judging pairs",
            event="surd.adapter.trained",
            from_event={"run_dir": "{{ event.payload.run_dir }}"},
        ),
    }
    return out


def entrypoint(fl: Flow[..., Any]) -> str:
    """`flows/<module>.py:<function>` of a flow, relative to the project root."""
    fn = fl.fn
    return f"{Path(inspect.getfile(fn)).resolve().relative_to(ROOT)}:{fn.__name__}"


def trigger(plan: Plan) -> list[DeploymentEventTrigger]:
    return [DeploymentEventTrigger(expect={plan.event}, parameters=plan.from_event)] if plan.event else []


def deployments(settings: Settings) -> list[Any]:
    """RunnerDeployments for `serve` (the flows read their settings from SURD_* at run time)."""
    d = settings.deploy
    out = []
    for full, plan in plans().items():
        out.append(
            plan.flow.to_deployment(
                name=full.split("/")[1],
                schedules=[Cron(getattr(d, plan.cron), timezone=d.timezone)] if plan.cron else None,
                triggers=list(trigger(plan)) or None,  # type: ignore[arg-type]
                parameters=plan.parameters or None,
                tags=[plan.pool],
                description=plan.description,
            )
        )
    return out


def render(settings: Settings) -> dict[str, Any]:
    """`prefect.yaml` for `prefect deploy --all`: the same deployments, on their work pools."""
    d = settings.deploy
    out = []
    for full, plan in plans().items():
        dep: dict[str, Any] = {
            "name": full.split("/")[1],
            "entrypoint": entrypoint(plan.flow),
            "description": plan.description,
        }
        if plan.parameters:
            dep["parameters"] = plan.parameters
        if plan.cron:
            dep["schedules"] = [{"cron": getattr(d, plan.cron), "timezone": d.timezone}]
        if plan.event:
            dep["triggers"] = [
                {"type": "event", "enabled": True, "expect": [plan.event], "parameters": plan.from_event}
            ]
        dep["work_pool"] = {"name": plan.pool}
        out.append(dep)
    return {
        "name": "surd-builder",
        "prefect-version": "3.9.1",
        "pull": [{"prefect.deployments.steps.set_working_directory": {"directory": d.workdir}}],
        "deployments": out,
    }


HEADER = """# Written by `surd deploy render` from the deployments' one declaration (flows/deployments.py) and
# the settings (schedules: deploy.rebuild_cron, deploy.release_cron; deploy.workdir): edit those, then
# render again; tests/flows/test_deployments.py fails when this file and the declaration differ.
# `prefect deploy --all` registers these; workers of pools cpu and gpu run them (`surd deploy worker`).
"""


def render_yaml(settings: Settings) -> str:
    import yaml

    return HEADER + yaml.safe_dump(render(settings), sort_keys=False, width=110, allow_unicode=True)


def serve_all(settings: Settings) -> None:
    from prefect import serve

    serve(*deployments(settings))


def setup(settings: Settings) -> dict[str, Any]:
    """Create (or update) what the deployments expect on the server: a work pool per pool named,
    one global concurrency limit per crawled site (one crawler per site across all workers), one
    for the GPU stages, and one for releasing this data root (the hourly `release` and the weekly
    `rebuild` then queue in Prefect; the data root's own lock would make the second wait anyway).
    Idempotent."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    made: dict[str, Any] = {"work_pools": [], "concurrency_limits": {}}
    with get_client(sync_client=True) as client:
        for pool in sorted({p.pool for p in plans().values()}):
            client.create_work_pool(WorkPoolCreate(name=pool, type="process"), overwrite=True)
            made["work_pools"].append(pool)
        limits = {f"crawl-{s}": 1 for s in SOURCES} | {"gpu": 1, release_limit(settings): 1}
        for name, limit in limits.items():
            client.upsert_global_concurrency_limit_by_name(name, limit)
            made["concurrency_limits"][name] = limit
    return made
