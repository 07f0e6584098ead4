"""The deployments, one definition for `surd deploy serve` (a process that serves them all) and
`prefect.yaml` (work pools `cpu` and `gpu`; `tests/test_deployments.py` keeps the two in step).

    rebuild   cron (deploy.rebuild_cron)    crawl → images → captions → CLIP → review queue → release
    release   cron (deploy.release_cron)    release what stewards decided since
    embed     on surd.release.published     per-layer LLM states of the new release
    train     on surd.embeddings.completed  the SUR-adapter (parameters: layer, base model)
    evaluate  on surd.adapter.trained       suites, report, judging pairs
"""

from __future__ import annotations

from typing import Any

from prefect import Flow
from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger
from prefect.schedules import Cron

from flows.rebuild import rebuild, release_flow, release_limit
from flows.training import embed_flow, evaluate_flow, train_flow
from surd.settings import Settings
from surd.sources import SOURCES

# deployment → (work pool, triggering event, parameters rendered from that event)
PLAN: dict[str, tuple[str, str | None, dict[str, str]]] = {
    "rebuild": ("cpu", None, {}),
    "release": ("cpu", None, {}),
    "embed": ("gpu", "surd.release.published", {"release": "{{ event.payload.path }}"}),
    "train": (
        "gpu",
        "surd.embeddings.completed",
        {"release": "{{ event.payload.release }}", "llm_model_id": "{{ event.payload.llm_model_id }}"},
    ),
    "evaluate": ("gpu", "surd.adapter.trained", {"run_dir": "{{ event.payload.run_dir }}"}),
}
FLOWS: dict[str, Flow[..., Any]] = {
    "rebuild": rebuild,
    "release": release_flow,
    "embed": embed_flow,
    "train": train_flow,
    "evaluate": evaluate_flow,
}


def trigger(name: str) -> list[DeploymentEventTrigger]:
    _, event, params = PLAN[name]
    return [DeploymentEventTrigger(expect={event}, parameters=params)] if event else []


def deployments(settings: Settings) -> list[Any]:
    """RunnerDeployments for `serve` (the flows read their settings from SURD_* at run time)."""
    tz = settings.deploy.timezone
    schedules = {
        "rebuild": [Cron(settings.deploy.rebuild_cron, timezone=tz)],
        "release": [Cron(settings.deploy.release_cron, timezone=tz)],
    }
    out = []
    for name, fl in FLOWS.items():
        pool, _, _ = PLAN[name]
        out.append(
            fl.to_deployment(
                name=name,
                schedules=schedules.get(name),
                triggers=list(trigger(name)) or None,  # type: ignore[arg-type]
                parameters={"train": False} if name == "rebuild" else None,
                tags=[pool],
            )
        )
    return out


def serve_all(settings: Settings) -> None:
    from prefect import serve

    serve(*deployments(settings))


def setup(settings: Settings) -> dict[str, Any]:
    """Create (or update) what the deployments expect on the server: work pools `cpu` and `gpu`,
    one global concurrency limit per crawled site (one crawler per site across all workers), one
    for the GPU stages, and one for releasing this data root (the hourly `release` and the weekly
    `rebuild` then queue in Prefect; the data root's own lock would make the second wait anyway).
    Idempotent."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    made: dict[str, Any] = {"work_pools": [], "concurrency_limits": {}}
    with get_client(sync_client=True) as client:
        for pool in ("cpu", "gpu"):
            client.create_work_pool(WorkPoolCreate(name=pool, type="process"), overwrite=True)
            made["work_pools"].append(pool)
        limits = {f"crawl-{s}": 1 for s in SOURCES} | {"gpu": 1, release_limit(settings): 1}
        for name, limit in limits.items():
            client.upsert_global_concurrency_limit_by_name(name, limit)
            made["concurrency_limits"][name] = limit
    return made
