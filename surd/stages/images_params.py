"""The images stage's parameters (surd.stages.images), in a module of their own because the pure
transforms (surd.stages.normalise) and the duplicate search read them too."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from surd.settings import StageParams


class ImageParams(StageParams):
    """How images are fetched, validated, normalised and compared (`SURD_IMAGES__*`)."""

    size: int = Field(512, ge=16, le=8192, description="side of the stored square, in pixels")
    resize_mode: Literal["center_crop", "pad"] = "center_crop"
    resample: Literal["bicubic", "lanczos", "bilinear"] = Field(
        "bicubic", description="antialiased when downscaling"
    )
    min_side: int = Field(64, ge=1, description="a smaller image is dropped (too_small)")
    max_pixels: int = Field(90_000_000, gt=0, le=10**10, description="decompression-bomb limit")
    max_bytes: int = Field(30_000_000, gt=0, le=2**34)
    encode_format: Literal["jpeg", "png", "webp"] = "jpeg"
    quality: int = Field(92, ge=1, le=100)
    phash_max_distance: int = Field(
        8, ge=0, le=63, description="near-copy candidates: 64-bit dHash within this Hamming distance"
    )
    confirm_max_distance: int = Field(
        32, ge=0, le=256, description="a candidate is a near copy when its 256-bit DCT hash is within this"
    )
    zoom_max_distance: int = Field(5, ge=0, le=63, description="centre crops: zoomed dHash within this")
    zoom_confirm_max_distance: int = Field(32, ge=0, le=256, description="…confirmed by its DCT within")
    workers: int = Field(0, ge=0, le=1024, description="decode/resize processes; 0 = all cores")
    requests_per_second: float = Field(10.0, gt=0, description="per image host")
    max_concurrency: int = Field(16, ge=1, le=1024, description="per image host")
