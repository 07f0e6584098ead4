"""The batch stages, by name: the one registry the pipeline, the CLI and the flows dispatch on.

Each entry names the module and class of a `surd.stages.base.Stage`; the module is imported
only when the stage runs, deliberately: the model stages import torch and transformers (seconds),
which `surd status` and the other light commands must not pay for.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from surd.stages.base import Stage

REGISTRY: dict[str, tuple[str, str]] = {
    "images": ("surd.stages.images", "ImagesStage"),
    "captions": ("surd.stages.captions", "CaptionStage"),
    "clip_scores": ("surd.stages.clip", "ClipStage"),
    "near_duplicates": ("surd.stages.near_duplicates", "NearDuplicateStage"),
    "embeddings": ("surd.stages.embed", "EmbedStage"),
}
PARTITIONED = ("captions", "clip_scores", "embeddings")  # stages a cluster may split by sample id


def stage_class(name: str) -> type[Stage]:
    if name not in REGISTRY:
        raise KeyError(f"no batch stage {name!r}; the stages are: {', '.join(REGISTRY)}")
    module, cls = REGISTRY[name]
    return getattr(import_module(module), cls)  # type: ignore[no-any-return]
