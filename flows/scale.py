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

from typing import Any

from prefect import flow, task
from prefect_dask import DaskTaskRunner

from surd import pipeline
from surd.settings import Settings, load_settings
from surd.stages import PARTITIONED
from surd.stages.base import merge
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
def stage_part(config: dict[str, Any], stage: str, k: int, n: int, extra: dict[str, Any]) -> dict[str, Any]:
    pin_gpu()
    return pipeline.run(load_settings(**config), stage, part=(k, n), **extra)


@task(retries=1, task_run_name="images-part-{n_rows}-items")
def images_part(rows: list[dict[str, Any]], politeness: Any, cfg: Any, n_rows: int) -> list[Any]:

    return process_part(rows, politeness, cfg)


@flow(name="partitioned-images")
def partitioned_images(config: dict[str, Any], workers: int) -> dict[str, Any]:
    settings = load_settings(**config)

    def submit(rows: list[dict[str, Any]], share: Any) -> Any:
        return images_part.submit(rows, share, settings.images, len(rows))

    return pipeline.images(settings, submit=submit, workers=workers)


def run_images(config: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The images stage with its fetching and decoding on the Dask cluster of the settings."""
    sub = partitioned_images.with_options(task_runner=task_runner(settings))  # type: ignore[arg-type]
    return sub(config, partitions(settings))


@flow(name="partitioned-stage")
def partitioned(
    config: dict[str, Any], stage: str, n: int, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    if stage not in PARTITIONED:
        raise ValueError(f"stage {stage!r} cannot be partitioned; these can: {', '.join(PARTITIONED)}")
    futures = [stage_part.submit(config, stage, k, n, extra or {}) for k in range(n)]
    return merge([f.result() for f in futures])


def run(config: dict[str, Any], settings: Settings, stage: str, **extra: Any) -> dict[str, Any]:
    """The stage on the Dask cluster of the settings, one task per partition."""
    sub = partitioned.with_options(task_runner=task_runner(settings))  # type: ignore[arg-type]
    return sub(config, stage, partitions(settings), extra)
