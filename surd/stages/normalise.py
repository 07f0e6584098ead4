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
    return img if img.mode == "RGB" else img.convert("RGB")


def decode(
    data: bytes, cfg: ImageSettings, target: int | None = None
) -> tuple[Image.Image, str, tuple[int, int]]:
    """Decode by content (not by URL or header); raise ImageRejected with the reason.

    Returns the RGB image, the format and the original (upright) size. With `target`, a JPEG is
    decoded at the smallest power-of-two reduction whose sides stay ≥ target (Pillow's draft
    mode), several times faster than a full decode followed by a downscale."""
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
            size = img.size
            if getattr(img, "is_animated", False):
                img.seek(0)
            if target and fmt == "JPEG":
                img.draft("RGB", (target, target))
            img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageRejected("decompression_bomb") from None
    except UnidentifiedImageError:
        raise ImageRejected("not_an_image") from None
    except (OSError, SyntaxError, ValueError) as exc:
        reason = "truncated" if "truncated" in str(exc) else "corrupt_image"
        raise ImageRejected(reason) from None
    turned = img.getexif().get(0x0112, 1) in (5, 6, 7, 8)
    upright: Image.Image = ImageOps.exif_transpose(img) or img
    return _to_rgb(upright), fmt, (size[1], size[0]) if turned else size


FILTERS = {
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "bilinear": Image.Resampling.BILINEAR,
}


def square(img: Image.Image, size: int, mode: str, resample: str = "bicubic") -> Image.Image:
    """Short side to `size` then centre crop (the training transform), or fit and pad. The crop
    box is resampled directly (no pixel outside it is filtered), with an antialiased filter after
    an integer pre-reduction (`reducing_gap`)."""
    flt = FILTERS[resample]
    w, h = img.size
    if mode == "center_crop":
        side = min(w, h)
        left, top = (w - side) / 2, (h - side) / 2
        return img.resize((size, size), flt, box=(left, top, left + side, top + side), reducing_gap=2.0)
    scale = size / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    img = img.resize((nw, nh), flt, reducing_gap=2.0)
    canvas = Image.new("RGB", (size, size), (0, 0, 0))
    canvas.paste(img, ((size - nw) // 2, (size - nh) // 2))
    return canvas


def dhash64(img: Image.Image) -> str:
    """A perceptual key: a 64-bit difference hash (survives re-encoding and small resizes) and the
    mean colour (so that two flat pictures of different colours, whose gradients are both nil,
    are not taken for one another), as 16 + 6 hex digits."""
    small = np.asarray(img.convert("L").resize((9, 8), Image.Resampling.BOX), dtype=np.int16)
    bits = int.from_bytes(np.packbits(small[:, 1:] > small[:, :-1]).tobytes(), "big")
    r, g, b = img.convert("RGB").resize((1, 1), Image.Resampling.BOX).getpixel((0, 0))  # type: ignore[misc]
    return f"{bits:016x}{r:02x}{g:02x}{b:02x}"


def _dct_matrix(n: int) -> np.ndarray:
    k, x = np.arange(n)[:, None], np.arange(n)[None, :]
    c = np.cos(np.pi * (2 * x + 1) * k / (2 * n)) * np.sqrt(2 / n)
    c[0] /= np.sqrt(2)
    return c


_DCT32 = _dct_matrix(32)


def dct256(img: Image.Image) -> str:
    """A second, independent perceptual hash: the signs, against their median, of the 16×16
    lowest frequencies of the 32×32 luminance's DCT (the 256-bit pHash), as 64 hex digits."""
    small = np.asarray(img.convert("L").resize((32, 32), Image.Resampling.BOX), dtype=np.float64)
    low = (_DCT32 @ small @ _DCT32.T)[:16, :16].ravel()
    bits = low > np.median(low[1:])
    return np.packbits(bits).tobytes().hex()


def perceptual_key(img: Image.Image) -> str:
    """The `phash` column: the 64-bit dHash and mean colour (22 hex digits), then the 256-bit DCT
    hash that confirms a near copy (64 more; rows written before it have 22)."""
    return dhash64(img) + dct256(img)


def normalise(data: bytes, cfg: ImageSettings) -> Normalised:
    img, fmt, (w, h) = decode(data, cfg, target=cfg.size)
    if min(w, h) < cfg.min_side:
        raise ImageRejected("too_small")
    out = square(img, cfg.size, cfg.resize_mode, cfg.resample)
    buf = io.BytesIO()
    out.save(buf, format=cfg.encode_format.upper(), quality=cfg.quality)
    return Normalised(
        data=buf.getvalue(),
        orig_width=w,
        orig_height=h,
        orig_format=fmt,
        sha256=hashlib.sha256(out.tobytes()).hexdigest(),
        phash=perceptual_key(out),
    )
