"""Scale-out on Dask through prefect-dask.

Captions, CLIP and embeddings: split into partitions by a stable hash of the sample id, one
Prefect task per partition on a Dask worker. Each partition writes its own parts, so partitions
never touch the same rows, a failed one is retried alone, and the result equals a single-process
run's. On a GPU machine, one Dask worker per GPU: each worker pins itself to the GPU of its index.

Images: each part of raw items is fetched and decoded by a task on a Dask worker, under that
worker's share of the per-host politeness limits; the flow writes the parts in input order and
decides duplicates itself, so "the first" of two duplicates is the same as in a single-process
run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect_dask import DaskTaskRunner

from surd import chain, pipeline
from surd.config import load_settings
from surd.pipeline import EmbedRun
from surd.settings import Settings
from surd.stages.base import StageRun, merge
from surd.stages.images import process_part


def task_runner(settings: Settings) -> DaskTaskRunner:
    sc = settings.scale
    if sc.dask_address:
        return DaskTaskRunner(address=sc.dask_address)
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={"n_workers": sc.local_workers, "threads_per_worker": 1, "processes": True},
    )


def partitions(settings: Settings) -> int:
    sc = settings.scale
    return sc.partitions or sc.local_workers or 2


def pin_gpu() -> None:
    """On a Dask worker of a multi-GPU machine: use the GPU of this worker's index."""
    import torch

    if not torch.cuda.is_available() or torch.cuda.device_count() < 2:
        return
    from distributed import get_worker

    name = str(get_worker().name)
    index = int(name) if name.isdigit() else sum(name.encode())
    torch.cuda.set_device(index % torch.cuda.device_count())


@task(retries=1, task_run_name="{stage}-part-{k}-of-{n}")
def stage_part(config: dict[str, Any], stage: str, k: int, n: int) -> StageRun:
    from distributed import get_worker

    pin_gpu()
    run = pipeline.run(load_settings(**config), stage, part=(k, n))
    worker = get_worker()
    run.workers = [f"{worker.name} {worker.address}"]
    return run


@task(retries=1, task_run_name="embed-part-{k}-of-{n}")
def embed_part(config: dict[str, Any], release: str, llm: str | None, k: int, n: int) -> EmbedRun:
    pin_gpu()
    return pipeline.embed(load_settings(**config), release, llm, part=(k, n))


@task(retries=1, task_run_name="images-part-{n_rows}-items")
def images_part(rows: list[dict[str, Any]], politeness: Any, cfg: Any, n_rows: int) -> list[Any]:
    return process_part(rows, politeness, cfg)


@flow(name="partitioned-images")
def partitioned_images(config: dict[str, Any], workers: int) -> StageRun:
    """The images stage: this process decides duplicates in order; parts are fetched and decoded
    by the cluster's workers, each under its share of the per-host politeness limits."""
    settings = load_settings(**config)

    def submit(rows: list[dict[str, Any]], share: Any) -> Any:
        return images_part.submit(rows, share, settings.stage("images"), len(rows))

    return pipeline.images(settings, submit=submit, workers=workers)


@flow(name="partitioned-stage")
def partitioned(config: dict[str, Any], stage: str, n: int) -> StageRun:
    if chain.PIPELINE.stage_class(stage).scale != "partitions":
        can = [s.name for s in chain.PIPELINE if s.scale == "partitions"]
        raise ValueError(f"stage {stage!r} cannot be partitioned; these can: {', '.join(can)}")
    futures = [stage_part.submit(config, stage, k, n) for k in range(n)]
    return merge([f.result() for f in futures])


@flow(name="partitioned-embed")
def partitioned_embed(config: dict[str, Any], release: str, llm: str | None, n: int) -> EmbedRun:
    runs = [f.result() for f in [embed_part.submit(config, release, llm, k, n) for k in range(n)]]
    return EmbedRun(sum(r.embedded for r in runs), runs[0].model_id)


def run(config: dict[str, Any], settings: Settings, stage: str) -> StageRun:
    """A declared stage on the Dask cluster of the settings: its parts sent out (`scale = parts`),
    or one task per partition (`scale = partitions`)."""
    how = chain.PIPELINE.stage_class(stage).scale
    if how == "parts":
        sub_images = partitioned_images.with_options(task_runner=task_runner(settings))  # type: ignore[arg-type]
        return sub_images(config, partitions(settings))  # type: ignore[no-any-return]
    sub = partitioned.with_options(task_runner=task_runner(settings))  # type: ignore[arg-type]
    return sub(config, stage, partitions(settings))  # type: ignore[no-any-return]


def embed(config: dict[str, Any], settings: Settings, release: str | Path, llm: str | None) -> EmbedRun:
    """A release's embeddings on the Dask cluster of the settings, one task per partition."""
    sub = partitioned_embed.with_options(task_runner=task_runner(settings))  # type: ignore[arg-type]
    return sub(config, str(release), llm, partitions(settings))  # type: ignore[no-any-return]
