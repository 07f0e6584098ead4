"""Generated pictures for the duplicate and scale benchmarks: distinct pictures from one generator,
and planted copies of some of them (exact, re-encoded, resized, cropped).

Pictures come in families of four, like one prompt's generations with different seeds: a family
shares its background gradient and palette, and each picture places its own shapes. So distinct
pictures are often alike, which is what a duplicate rule must not drop.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

SIZES = [(512, 512), (512, 768), (768, 512), (640, 640), (576, 768), (768, 576)]
KINDS = ("exact", "reencode", "resize", "crop")
FAMILY = 4


def picture(i: int) -> Image.Image:
    """Picture i: its family (i // FAMILY) sets size, background and palette; i sets the shapes."""
    fam = np.random.default_rng([7, i // FAMILY])
    own = np.random.default_rng([11, i])
    w, h = SIZES[int(fam.integers(len(SIZES)))]
    a, b = fam.integers(0, 256, 3), fam.integers(0, 256, 3)
    angle = fam.uniform(0, np.pi)
    yy, xx = np.mgrid[0 : h // 16, 0 : w // 16]  # a coarse field, smoothly upscaled
    t = (np.cos(angle) * xx * 16 / w + np.sin(angle) * yy * 16 / h + 1) / 2
    t = np.clip(t + own.normal(0, 0.08, t.shape), 0, 1)
    bg = (a[None, None, :] * (1 - t[..., None]) + b[None, None, :] * t[..., None]).astype(np.uint8)
    img = Image.fromarray(bg, "RGB").resize((w, h), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(img)
    palette = fam.integers(0, 256, (5, 3))
    for _ in range(int(own.integers(3, 9))):
        x0, y0 = int(own.integers(-w // 8, w)), int(own.integers(-h // 8, h))
        x1, y1 = x0 + int(own.integers(w // 10, w // 2)), y0 + int(own.integers(h // 10, h // 2))
        colour = tuple(int(c) for c in palette[int(own.integers(5))])
        if own.random() < 0.5:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        else:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
    return img


def encode(img: Image.Image, quality: int = 90, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, quality=quality)
    return buf.getvalue()


def planted(img: Image.Image, original: bytes, kind: str, seed: int) -> bytes:
    """A copy of a picture as another site might serve it."""
    rng = np.random.default_rng([13, seed])
    if kind == "exact":
        return original
    if kind == "reencode":
        return encode(img, quality=int(rng.integers(60, 80)), fmt=str(rng.choice(["JPEG", "WEBP"])))
    if kind == "resize":
        scale = float(rng.choice([0.6, 0.75, 1.25]))
        size = (round(img.width * scale), round(img.height * scale))
        return encode(img.resize(size, Image.Resampling.LANCZOS), quality=85)
    if kind == "crop":
        f = float(rng.uniform(0.02, 0.05))  # 2–5% off each side
        dx, dy = round(img.width * f), round(img.height * f)
        return encode(img.crop((dx, dy, img.width - dx, img.height - dy)), quality=88)
    raise ValueError(kind)


def items(n: int, dup_share: float = 0.02) -> list[tuple[int, str | None, int | None]]:
    """n items in order: (picture, kind of copy or None, the item it copies or None). About
    `dup_share` of them are copies of an earlier item, of each kind in turn."""
    rng = np.random.default_rng(3)
    out: list[tuple[int, str | None, int | None]] = []
    pic = 0
    for k in range(n):
        if k > 20 and rng.random() < dup_share:
            src = int(rng.integers(0, k))
            while out[src][1] is not None:
                src = int(rng.integers(0, k))
            out.append((out[src][0], KINDS[len([o for o in out[-200:] if o[1]]) % len(KINDS)], src))
        else:
            out.append((pic, None, None))
            pic += 1
    return out


def body(item: tuple[int, str | None, int | None], seed: int) -> bytes:
    """The bytes an item's URL serves."""
    pic, kind, _ = item
    img = picture(pic)
    original = encode(img)
    return original if kind is None else planted(img, original, kind, seed)
