"""The caption stage's parameters (surd.stages.captions), in a module of their own because the
model side (surd.models.blip_caption, surd.models.caption_lavis) reads them too."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from surd.settings import StageParams


class CaptionParams(StageParams):
    """How BLIP captions (`SURD_CAPTION__*`): LAVIS' `base_coco` generation by default."""

    backend: Literal["transformers", "lavis"] = Field(
        "transformers", description="lavis: LAVIS itself, in its own venv (make lavis-env)"
    )
    lavis_python: str = Field(".venv-lavis/bin/python", description="the LAVIS venv's python")
    search: Literal["lavis", "transformers", "generate"] = Field(
        "lavis",
        description="lavis: the beam search LAVIS ran (transformers 4.26 scoring, surd.models.blip_decode); "
        "transformers: transformers 5's scoring, same decoder; generate: transformers' own generate (slow)",
    )
    batch_size: int = Field(256, ge=1, le=65536, description="images per model call (the benchmarked size)")
    workers: int | None = Field(
        None,
        ge=0,
        le=1024,
        description="decode processes beside the model; default: all cores but one beside a GPU, 0 on CPU",
    )
    prompt: str = "a picture of "
    num_beams: int = Field(3, ge=1, le=64)
    max_length: int = Field(30, ge=1, le=512, description="tokens in total, prompt included (as LAVIS)")
    min_length: int = Field(10, ge=0, le=512, description="tokens in total, prompt included (as LAVIS)")
    vision_attention: Literal["eager", "sdpa"] = Field(
        "eager",
        description="sdpa: the vision tower on torch's fused attention (faster on a GPU, not bit-exact: "
        "benchmarks/gpu_check.py prints the captions that change)",
    )
    gpu_decode: bool = Field(
        False,
        description="on a GPU: decode the stored JPEGs there (torchvision/nvJPEG; pixels differ slightly)",
    )

    @model_validator(mode="after")
    def _lengths(self) -> CaptionParams:
        if self.min_length > self.max_length:
            raise ValueError("min_length must not exceed max_length")
        return self
