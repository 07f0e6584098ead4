"""Synthetic stored images for the GPU benchmarks: 512² JPEGs like the images table holds."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw


def jpeg_512(i: int, size: int = 512) -> bytes:
    rng = np.random.default_rng(i)
    base = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
    img = Image.fromarray(base).resize((size, size), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x, y = (int(v) for v in rng.integers(0, size, 2))
        draw.ellipse((x, y, x + 120, y + 90), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def image_set(n: int, unique: int = 512) -> list[bytes]:
    """n JPEG blobs (a pool of `unique` distinct images, repeated); every one is decoded anew."""
    pool = [jpeg_512(i) for i in range(min(n, unique))]
    return [pool[i % len(pool)] for i in range(n)]
