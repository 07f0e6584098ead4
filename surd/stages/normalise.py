"""Pure image transforms: validate by content, normalise to a square, hash. No I/O."""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from surd.stages.images_params import ImageParams


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
    data: bytes, cfg: ImageParams, target: int | None = None
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


Box = tuple[float, float, float, float]


def _dhash_bits(gray: Image.Image, box: Box | None = None) -> str:
    small = np.asarray(gray.resize((9, 8), Image.Resampling.BOX, box=box), dtype=np.int16)
    return f"{int.from_bytes(np.packbits(small[:, 1:] > small[:, :-1]).tobytes(), 'big'):016x}"


def dhash64(img: Image.Image) -> str:
    """A perceptual key: a 64-bit difference hash (survives re-encoding and small resizes) and the
    mean colour (so that two flat pictures of different colours, whose gradients are both nil,
    are not taken for one another), as 16 + 6 hex digits."""
    r, g, b = img.convert("RGB").resize((1, 1), Image.Resampling.BOX).getpixel((0, 0))  # type: ignore[misc]
    return f"{_dhash_bits(img.convert('L'))}{r:02x}{g:02x}{b:02x}"


def _dct_matrix(n: int) -> np.ndarray:
    k, x = np.arange(n)[:, None], np.arange(n)[None, :]
    c = np.cos(np.pi * (2 * x + 1) * k / (2 * n)) * np.sqrt(2 / n)
    c[0] /= np.sqrt(2)
    return c


_DCT32 = _dct_matrix(32)


def _dct_bits(gray: Image.Image, box: Box | None = None) -> str:
    small = np.asarray(gray.resize((32, 32), Image.Resampling.BOX, box=box), dtype=np.float64)
    low = (_DCT32 @ small @ _DCT32.T)[:16, :16].ravel()
    return np.packbits(low > np.median(low[1:])).tobytes().hex()


def dct256(img: Image.Image) -> str:
    """A second, independent perceptual hash: the signs, against their median, of the 16×16
    lowest frequencies of the 32×32 luminance's DCT (the 256-bit pHash), as 64 hex digits."""
    return _dct_bits(img.convert("L"))


ZOOMS = (1.04, 1.08, 1.12, 1.16)  # centre crops of 2–7% a side; docs/benchmarks.md, "Duplicates"


def zoom_views(img: Image.Image) -> str:
    """Both hashes (16 + 64 hex digits) of the centre of the image enlarged by each of ZOOMS: what
    a copy cropped around its centre hashes to once normalised (a centre crop of any aspect
    becomes a centred enlargement of the square), so that such a copy is found either way."""
    gray, (w, h) = img.convert("L"), img.size
    out = []
    for z in ZOOMS:
        dx, dy = w * (1 - 1 / z) / 2, h * (1 - 1 / z) / 2
        box = (dx, dy, w - dx, h - dy)
        out.append(_dhash_bits(gray, box) + _dct_bits(gray, box))
    return "".join(out)


def perceptual_key(img: Image.Image) -> str:
    """The `phash` column: the 64-bit dHash and mean colour (22 hex digits), the 256-bit DCT hash
    that confirms a near copy (64), then `zoom_views` (80 per zoom). Rows written before hold 22
    or 86 digits."""
    return dhash64(img) + dct256(img) + zoom_views(img)


def normalise(data: bytes, cfg: ImageParams) -> Normalised:
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
