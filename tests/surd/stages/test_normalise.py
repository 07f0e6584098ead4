"""Every bad input ends with its reason; good ones become 512² (here 64²) squares."""

import io

import numpy as np
import pytest
from PIL import Image

from surd.stages.dedup import Deduper
from surd.stages.images_params import ImageParams
from surd.stages.normalise import ImageRejected, normalise

CFG = ImageParams(size=64, min_side=32, max_pixels=4_000_000)


def encode(img: Image.Image, fmt: str = "PNG", **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def noise(w: int, h: int, mode: str = "RGB") -> Image.Image:
    arr = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
    return Image.fromarray(arr, "RGB").convert(mode)


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"", "empty_body"),
        (b"<!DOCTYPE html><html>blocked</html>", "not_an_image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 50, "not_an_image"),
    ],
)
def test_rejections(data: bytes, reason: str) -> None:
    with pytest.raises(ImageRejected) as err:
        normalise(data, CFG)
    assert err.value.reason == reason


def test_truncated() -> None:
    data = encode(noise(300, 300), "JPEG")
    with pytest.raises(ImageRejected, match="truncated|corrupt_image"):
        normalise(data[: len(data) // 2], CFG)


def test_decompression_bomb() -> None:
    data = encode(Image.new("RGB", (3000, 3000)), "PNG")
    with pytest.raises(ImageRejected, match="decompression_bomb"):
        normalise(data, CFG)


def test_too_small_and_too_large() -> None:
    with pytest.raises(ImageRejected, match="too_small"):
        normalise(encode(noise(20, 100)), CFG)
    with pytest.raises(ImageRejected, match="too_large"):
        normalise(b"x" * 100, ImageParams(max_bytes=10))


@pytest.mark.parametrize(
    "img",
    [
        noise(200, 100, "CMYK"),
        noise(100, 200, "P"),
        noise(120, 120, "RGBA"),
        Image.fromarray(np.full((80, 90), 40000, dtype=np.uint16)),
    ],
)
def test_modes_become_rgb_squares(img: Image.Image) -> None:
    fmt = "TIFF" if img.mode == "CMYK" else "PNG"
    out = normalise(encode(img, fmt), CFG)
    back = Image.open(io.BytesIO(out.data))
    assert back.size == (64, 64) and back.mode == "RGB"


def test_animated_takes_first_frame_and_exif_rotation_applies() -> None:
    frames = [Image.new("RGB", (100, 100), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    out = normalise(buf.getvalue(), CFG)
    assert out.orig_format == "GIF"
    assert Image.open(io.BytesIO(out.data)).getpixel((32, 32))[0] > 200
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90°
    rotated = normalise(encode(noise(200, 100), "JPEG", exif=exif), CFG)
    assert (rotated.orig_width, rotated.orig_height) == (100, 200)


def test_near_duplicates_found_exact_hashes_differ() -> None:
    from surd.sources.replay import synth_image

    picture = Image.open(io.BytesIO(synth_image("near", 400)[0])).convert("RGB")
    a = normalise(encode(picture, "PNG"), CFG)
    b = normalise(encode(picture, "JPEG", quality=70), CFG)
    assert a.sha256 != b.sha256
    other = normalise(encode(noise(301, 300).rotate(90)), CFG)
    dedup = Deduper(CFG.phash_max_distance, CFG.confirm_max_distance)
    assert dedup.decide(["first"], [a.sha256], [a.phash]) == [None]
    found = dedup.decide(["again", "other"], [b.sha256, other.sha256], [b.phash, other.phash])
    assert found[0] is not None and found[0].first == "first" and found[0].signal == "near"
    assert found[1] is None
    assert len(a.phash) == 86 + 80 * 4  # dHash, mean colour, 256-bit DCT hash, then 4 zoom views


@pytest.mark.parametrize("crop_first", [False, True])
def test_a_centre_crop_is_found_either_way_round_and_names_its_zoom(crop_first: bool) -> None:
    from surd.sources.replay import synth_image

    cfg = ImageParams()
    picture = Image.open(io.BytesIO(synth_image("x1", 640)[0])).convert("RGB")
    w, h = picture.size
    whole = normalise(encode(picture, "JPEG", quality=90), cfg)
    crops = [
        normalise(encode(picture.crop((dx, dy, w - dx, h - dy)), "JPEG", quality=85), cfg)
        for dx, dy in ((w // 25, h // 25), (w // 16, 0))  # 4% all round; 6% off the sides of a portrait
    ]
    other = normalise(encode(Image.open(io.BytesIO(synth_image("other", 640)[0])).convert("RGB")), cfg)
    for crop in crops:
        first, then = (crop, whole) if crop_first else (whole, crop)
        dedup = Deduper(cfg.phash_max_distance, cfg.confirm_max_distance)
        assert dedup.decide(["first"], [first.sha256], [first.phash]) == [None]
        found = dedup.decide(["then", "other"], [then.sha256, other.sha256], [then.phash, other.phash])
        # a view matched: the whole images are too far apart (they would have been named first)
        assert found[0] is not None and found[0].first == "first" and found[0].zoom is not None
        assert found[1] is None
