"""Flows after a release: `embed` (per-layer LLM states), `train` (the SUR-adapter) and
`evaluate`. Each emits an event when it finishes, which the next one's deployment trigger
waits for: surd.release.published → embed → surd.embeddings.completed → train →
surd.adapter.trained → evaluate. Each flow is one call into the library (`surd.pipeline`) or the
application layer's training glue (`surd.app.training`). (Not named `adapter.py`: Prefect runs a
deployment's flow file as a script, and its name would shadow the `adapter` package.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.events import emit_event

from surd import pipeline
from surd.app import training
from surd.config import load_settings
from surd.pipeline import EmbedRun
from surd.settings import Settings


def _settings(config: dict[str, Any] | None, **adapter: Any) -> Settings:
    config = dict(config or {})
    overrides = {k: v for k, v in adapter.items() if v is not None}
    if overrides:
        config["adapter"] = {**config.get("adapter", {}), **overrides}
    return load_settings(**config)


@flow(name="embed")
def embed_flow(release: str, llm: str | None = None, config: dict[str, Any] | None = None) -> EmbedRun:
    """Per-layer mean-pooled LLM states of every simple prompt of the release (incremental)."""
    settings = _settings(config)
    if settings.scale.enabled:  # partitions on Dask workers, one per GPU on a GPU machine
        from flows import scale  # Dask: only when scaled out

        out = scale.embed(config or {}, settings, release, llm)
    else:
        out = pipeline.embed(settings, release, llm)
    get_run_logger().info("embedded %d prompts with %s", out.embedded, out.model_id)
    emit_event(
        event="surd.embeddings.completed",
        resource={"prefect.resource.id": f"surd.embeddings.{Path(release).name}.{out.model_id}"},
        payload={"release": release, "llm_model_id": out.model_id, "embedded": out.embedded},
    )
    return out


@flow(name="train")
def train_flow(
    release: str,
    llm_model_id: str,
    layer: int | None = None,
    base_model: str | None = None,
    config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train (or resume) the SUR-adapter; every loss term goes to the log and an artifact."""
    settings = _settings(config, layer=layer, base_model=base_model)
    log = get_run_logger()
    every = settings.adapter.log_every
    total = settings.adapter.steps
    progress_id = cast(UUID, create_progress_artifact(progress=0.0, key="adapter-training-progress"))
    logged: list[dict[str, Any]] = []

    def on_step(row: dict[str, float]) -> None:
        if row["step"] % every == 0 or row["step"] == total:
            log.info(
                "step %d/%d loss %.5f (simple %.5f, llm %.5f, cp %.5f)",
                row["step"],
                total,
                row["loss"],
                row["loss_simple"],
                row["loss_llm"],
                row["loss_cp"],
            )
            logged.append(dict(row))
            update_progress_artifact(progress_id, progress=100.0 * row["step"] / total)

    out = training.train(settings, release, llm_model_id, log=on_step)
    if logged:
        create_table_artifact(key="adapter-training-losses", table=logged, description=out["run_dir"])
    emit_event(
        event="surd.adapter.trained",
        resource={"prefect.resource.id": f"surd.adapter.{Path(out['run_dir']).name}"},
        payload={"run_dir": out["run_dir"], "release": release, "llm_model_id": llm_model_id},
    )
    return out


@flow(name="evaluate")
def evaluate_flow(run_dir: str, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Baseline vs adapter on the Action, Color and Counting suites; the report as an artifact."""
    log = get_run_logger()
    out = training.evaluate_run(_settings(config), run_dir, progress=log.info)
    create_markdown_artifact(key="adapter-evaluation", markdown=Path(out["report"]).read_text())
    return out
