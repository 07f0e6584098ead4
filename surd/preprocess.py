"""Stored 512² JPEGs → normalised model inputs, in worker processes that overlap the GPU.

The stored images are already square, so BLIP's processor (resize to 384², bicubic) and
open_clip's (shortest side to 224, bicubic, centre crop) both reduce to one bicubic resize and a
normalisation. JPEG decoding uses Pillow's draft mode, which decodes at a reduced scale that is
still at least the target size.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class Spec:
    size: int
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD


def to_tensor(data: bytes, spec: Spec) -> torch.Tensor:
    """Decoded and resized (3, size, size) uint8: a quarter of float32's bytes between processes;
    `normalize` finishes the job on the model's device."""
    raw = Image.open(io.BytesIO(data))
    raw.draft("RGB", (spec.size, spec.size))
    img: Image.Image = raw.convert("RGB")
    w, h = img.size
    if w != h:  # not one of ours: centre crop to square first
        s = min(w, h)
        img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    img = img.resize((spec.size, spec.size), Image.Resampling.BICUBIC)
    return torch.from_numpy(np.ascontiguousarray(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)))


def normalize(pixels: torch.Tensor, spec: Spec, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """uint8 batches → the model's normalised input, on its device; float input passes through."""
    if pixels.dtype != torch.uint8:
        return pixels.to(device, dtype, non_blocking=True)
    x = pixels.to(device, non_blocking=True).float().div_(255.0)
    mean = torch.tensor(spec.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=device).view(1, 3, 1, 1)
    return x.sub_(mean).div_(std).to(dtype)


class _Blobs(Dataset[torch.Tensor]):
    def __init__(self, blobs: Sequence[bytes], spec: Spec) -> None:
        self.blobs, self.spec = blobs, spec

    def __len__(self) -> int:
        return len(self.blobs)

    def __getitem__(self, i: int) -> torch.Tensor:
        return to_tensor(self.blobs[i], self.spec)


def batches(blobs: Sequence[bytes], spec: Spec, batch_size: int, workers: int) -> DataLoader[torch.Tensor]:
    """uint8 batches of (B, 3, size, size) in input order; `workers` decoding processes (0 = inline)."""
    return DataLoader(
        _Blobs(blobs, spec),
        batch_size=batch_size,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
    )
