"""Pure image transforms: validate by content, normalise to a square, hash. No I/O."""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from surd.settings import ImageSettings


class ImageRejected(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Normalised:
    data: bytes
    orig_width: int
    orig_height: int
    orig_format: str
    sha256: str
    phash: str


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        hi = arr.max() or 1.0
        img = Image.fromarray((arr / hi * 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return img.convert("RGB")


def decode(data: bytes, cfg: ImageSettings) -> tuple[Image.Image, str]:
    """Decode by content (not by URL or header); raise ImageRejected with the reason."""
    if not data:
        raise ImageRejected("empty_body")
    if len(data) > cfg.max_bytes:
        raise ImageRejected("too_large")
    Image.MAX_IMAGE_PIXELS = cfg.max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            fmt = img.format or "unknown"
            if getattr(img, "is_animated", False):
                img.seek(0)
            img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageRejected("decompression_bomb") from None
    except UnidentifiedImageError:
        raise ImageRejected("not_an_image") from None
    except (OSError, SyntaxError, ValueError) as exc:
        reason = "truncated" if "truncated" in str(exc) else "corrupt_image"
        raise ImageRejected(reason) from None
    upright: Image.Image = ImageOps.exif_transpose(img) or img
    return _to_rgb(upright), fmt


def square(img: Image.Image, size: int, mode: str) -> Image.Image:
    """Short side to `size` then centre crop (the training transform), or fit and pad."""
    w, h = img.size
    if mode == "center_crop":
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        img = img.resize((nw, nh), Image.Resampling.LANCZOS, reducing_gap=3.0)
        left, top = (nw - size) // 2, (nh - size) // 2
        return img.crop((left, top, left + size, top + size))
    scale = size / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    img = img.resize((nw, nh), Image.Resampling.LANCZOS, reducing_gap=3.0)
    canvas = Image.new("RGB", (size, size), (0, 0, 0))
    canvas.paste(img, ((size - nw) // 2, (size - nh) // 2))
    return canvas


def dhash64(img: Image.Image) -> str:
    """A 64-bit difference hash (perceptual: survives re-encoding and small resizes)."""
    small = np.asarray(img.convert("L").resize((9, 8), Image.Resampling.BOX), dtype=np.int16)
    bits = (small[:, 1:] > small[:, :-1]).flatten()
    return f"{int(''.join('1' if b else '0' for b in bits), 2):016x}"


def normalise(data: bytes, cfg: ImageSettings) -> Normalised:
    img, fmt = decode(data, cfg)
    w, h = img.size
    if min(w, h) < cfg.min_side:
        raise ImageRejected("too_small")
    out = square(img, cfg.size, cfg.resize_mode)
    buf = io.BytesIO()
    out.save(buf, format=cfg.encode_format.upper(), quality=cfg.quality)
    return Normalised(
        data=buf.getvalue(),
        orig_width=w,
        orig_height=h,
        orig_format=fmt,
        sha256=hashlib.sha256(out.tobytes()).hexdigest(),
        phash=dhash64(out),
    )


class NearDuplicateIndex:
    """Exact Hamming search over 64-bit hashes: with distance ≤ t, two hashes share at least
    one of t+1 bands (pigeonhole), so only band-mates are compared."""

    def __init__(self, max_distance: int) -> None:
        self.t = max_distance
        self.bands = max_distance + 1
        self._buckets: list[dict[int, list[tuple[int, str]]]] = [{} for _ in range(self.bands)]

    def _band_keys(self, value: int) -> list[int]:
        width = 64 // self.bands
        keys = []
        for b in range(self.bands):
            lo = b * width
            hi = 64 if b == self.bands - 1 else lo + width
            keys.append((value >> lo) & ((1 << (hi - lo)) - 1))
        return keys

    def find(self, phash: str) -> str | None:
        value = int(phash, 16)
        for b, key in enumerate(self._band_keys(value)):
            for other, ident in self._buckets[b].get(key, []):
                if bin(value ^ other).count("1") <= self.t:
                    return ident
        return None

    def add(self, phash: str, ident: str) -> None:
        value = int(phash, 16)
        for b, key in enumerate(self._band_keys(value)):
            self._buckets[b].setdefault(key, []).append((value, ident))
