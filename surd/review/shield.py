"""Shielding stewards from what they have not chosen to see: which items are flagged (the sources'
NSFW label, the trained detector's score, CLIP's zero-shot cue, as the settings say), and the
renderings the server sends of a flagged image until the steward reveals it. The blur is made
here, not in the browser: no unblurred byte of a flagged image leaves the server before the
reveal, and none is ever cached."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from PIL import Image, ImageFilter

from surd.settings import ReviewSettings

THUMB = 192  # the grid's thumbnails, pixels a side
VEIL = 12  # a flagged image is shrunk to this many pixels a side before it is blurred back up


def flagged(item: Mapping[str, Any], review: ReviewSettings) -> bool:
    """Whether the review blurs this item until its steward reveals it."""
    level = item.get("safety_level")
    detector = item.get("nsfw_detector")
    zero_shot = item.get("nsfw_score")
    return bool(
        (level is not None and level >= review.blur_at)
        or (level is None and review.blur_unlabelled)
        or (detector is not None and review.blur_detector is not None and detector >= review.blur_detector)
        or (zero_shot is not None and review.blur_score is not None and zero_shot >= review.blur_score)
    )


def _jpeg(img: Image.Image, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def veiled(image: bytes, size: int) -> bytes:
    """A rendering of `image` that shows its colours and nothing else: shrunk to VEIL pixels a side,
    blurred, and drawn back up to `size`."""
    with Image.open(io.BytesIO(image)) as img:
        img.draft("RGB", (VEIL * 4, VEIL * 4))  # a JPEG decodes at 1/8 scale: nothing finer is kept
        small = img.convert("RGB").resize((VEIL, VEIL), Image.Resampling.BOX)
    return _jpeg(
        small.resize((size, size), Image.Resampling.BILINEAR).filter(ImageFilter.GaussianBlur(size / 24))
    )


def thumbnail(image: bytes, size: int = THUMB) -> bytes:
    with Image.open(io.BytesIO(image)) as img:
        img.draft("RGB", (size, size))  # a JPEG decodes at the smallest scale still >= size
        img.thumbnail((size, size), Image.Resampling.LANCZOS)
        return _jpeg(img, quality=80)
