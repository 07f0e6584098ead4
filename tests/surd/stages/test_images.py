"""The images stage end to end against the replay site: every bad input ends with its reason."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from storage.layout import DataDir
from surd import chain
from surd.config import load_settings
from surd.ids import sample_id
from surd.settings import Settings
from surd.sources.replay import ReplaySite, synth_image
from surd.stages.base import StageRun, run_stage
from surd.stages.images import retryable


def run_images(settings: Any, data: Any, **options: Any) -> StageRun:
    return run_stage(chain.PIPELINE.build("images", settings, data, **options))


def retry_failed(settings: Any, data: Any, reasons: list[str] | None = None) -> StageRun:
    return run_images(settings, data, rows=retryable(data, reasons))


def encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def noise(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


def animated() -> bytes:
    frames = [Image.new("RGB", (200, 200), c) for c in ((250, 0, 0), (0, 0, 250))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    return buf.getvalue()


PICTURE = Image.open(io.BytesIO(synth_image("a picture", 320)[0])).convert("RGB")
GOOD = encode(PICTURE, "JPEG", quality=90)
CASES: dict[str, tuple[list[tuple[int, dict[str, str], bytes, float]], str]] = {
    "ok": ([(200, {"Content-Type": "image/jpeg"}, GOOD, 0.0)], "ok"),
    "corrupt": (
        [(200, {"Content-Type": "image/png"}, b"\x89PNG\r\n\x1a\n" + b"\x07" * 300, 0.0)],
        "not_an_image",
    ),
    "truncated": (
        [(200, {"Content-Type": "image/jpeg"}, encode(noise(400, 400, 1), "JPEG")[:4000], 0.0)],
        "truncated",
    ),
    "bomb": (
        [(200, {"Content-Type": "image/png"}, encode(Image.new("RGB", (5000, 5000)), "PNG"), 0.0)],
        "decompression_bomb",
    ),
    "html": (
        [(200, {"Content-Type": "image/jpeg"}, b"<!DOCTYPE html><html>Just a moment...</html>", 0.0)],
        "not_an_image",
    ),
    "empty": ([(200, {"Content-Type": "image/jpeg"}, b"", 0.0)], "empty_body"),
    "oversized": ([(200, {"Content-Type": "image/png"}, b"\x00" * 300_000, 0.0)], "too_large"),
    "animated": ([(200, {"Content-Type": "image/gif"}, animated(), 0.0)], "ok"),
    "cmyk": (
        [(200, {"Content-Type": "image/tiff"}, encode(noise(200, 240, 2).convert("CMYK"), "TIFF"), 0.0)],
        "ok",
    ),
    "16bit": (
        [
            (
                200,
                {"Content-Type": "image/png"},
                encode(
                    Image.fromarray((np.arange(150 * 160).reshape(150, 160) * 2).astype(np.uint16)), "PNG"
                ),
                0.0,
            )
        ],
        "ok",
    ),
    "redirect_loop": ([(302, {"Location": "/img/t/redirect_loop"}, b"", 0.0)] * 8, "too_many_redirects"),
    "noai": (
        [(200, {"Content-Type": "image/jpeg", "X-Robots-Tag": "noai, noimageai"}, GOOD, 0.0)],
        "opt_out_noai",
    ),
    "gone": ([(404, {"Content-Type": "text/html"}, b"nope", 0.0)], "http_404"),
    "busy": ([(503, {"Retry-After": "0"}, b"", 0.0)] * 2, "http_503"),
    "tiny": ([(200, {"Content-Type": "image/png"}, encode(noise(20, 20, 3), "PNG"), 0.0)], "too_small"),
    "copy": (
        [
            (
                200,
                {"Content-Type": "image/png"},
                encode(PICTURE.resize((PICTURE.width * 3 // 4, PICTURE.height * 3 // 4)), "PNG"),
                0.0,
            )
        ],
        "duplicate_of",
    ),
}


@pytest.fixture
def site():
    s = ReplaySite().start()
    yield s
    s.stop()


def setup(root: Path, site: ReplaySite, names: list[str]) -> tuple[Settings, DataDir]:
    for name in names:
        site.script(f"/img/t/{name}", *CASES[name][0])
    settings = load_settings(
        data_root=root,
        part_size=4,
        crawl={"max_retries": 1, "backoff_base_s": 0.01, "max_response_bytes": 200_000},
        images={
            "size": 64,
            "min_side": 32,
            "max_pixels": 10_000_000,
            "workers": 2,
            "requests_per_second": 200.0,
        },
    )
    data = chain.PIPELINE.data_dir(root).open()
    now = datetime.now(UTC)
    data.table("raw_items").write(
        [
            {
                "sample_id": sample_id("t", n),
                "status": "ok",
                "reason": None,
                "source": "t",
                "source_item_id": n,
                "image_url": f"{site.base_url}/img/t/{n}",
                "complex_prompt": "p",
                "fetched_at": now,
            }
            for n in names
        ]
    )
    return settings, data


def reasons(data: DataDir) -> dict[str, str]:
    rows = data.table("images").read(["sample_id", "status", "reason"]).to_pylist()
    return {r["sample_id"]: "ok" if r["status"] == "ok" else r["reason"].split(":")[0] for r in rows}


def test_every_bad_input_ends_with_its_reason(tmp_path: Path, site: ReplaySite) -> None:
    names = list(CASES)
    settings, data = setup(tmp_path, site, names)
    run = run_images(settings, data)
    got = reasons(data)
    assert run.processed == len(names) == len(got)  # nothing lost, nothing crashed
    for name in names:
        assert got[sample_id("t", name)] == CASES[name][1], name
    [dup] = [r for r in data.table("images").read().to_pylist() if r["sample_id"] == sample_id("t", "copy")]
    assert dup["duplicate_of"] == sample_id("t", "ok")  # same picture, other encoding
    ok = [r for r in data.table("images").read().to_pylist() if r["status"] == "ok"]
    assert all(Image.open(io.BytesIO(r["image"])).size == (64, 64) for r in ok)
    # the noai answer was vetoed before its body was read: still counted, never stored
    assert [
        r["image"]
        for r in data.table("images").read().to_pylist()
        if r["sample_id"] == sample_id("t", "noai")
    ] == [None]


def test_retry_fetches_only_the_failures(tmp_path: Path, site: ReplaySite) -> None:
    settings, data = setup(tmp_path, site, ["ok", "busy", "gone", "cmyk", "empty"])
    run_images(settings, data)
    before = reasons(data)
    assert before[sample_id("t", "busy")] == "http_503"
    parts = data.table("images").parts()
    served = len(site.requests)
    again = retry_failed(settings, data)  # the 503s are over: the replay site now answers
    assert again.processed == 1  # only the transient failure; a 404 is final
    after = reasons(data)
    assert after[sample_id("t", "busy")] == "ok"
    assert {k: v for k, v in after.items() if k != sample_id("t", "busy")} == {
        k: v for k, v in before.items() if k != sample_id("t", "busy")
    }
    assert data.table("images").parts() == parts and data.table("images").count() == 5  # swapped in place
    assert {p for _, p in site.requests[served:] if p.startswith("/img/")} == {"/img/t/busy"}
    assert retry_failed(settings, data, ["http_404"]).processed == 1  # asked for explicitly


def test_remote_workers_give_the_same_table_duplicates_included(tmp_path: Path, site: ReplaySite) -> None:
    """`submit` (how flows/scale.py hands parts to Dask workers) against the local process pool."""
    from concurrent.futures import ProcessPoolExecutor

    from surd.stages.images import process_part

    names = list(CASES)
    tables = {}
    for mode in ("local", "remote"):
        settings, data = setup(tmp_path / mode, site, names)
        if mode == "local":
            run_images(settings, data)
        else:
            with ProcessPoolExecutor(2) as pool:
                run_images(
                    settings,
                    data,
                    submit=lambda rows, share, s=settings: pool.submit(
                        process_part, rows, share, s.stage("images")
                    ),
                    workers=2,
                )
        rows = data.table("images").read().to_pylist()
        tables[mode] = sorted(
            ({k: v for k, v in r.items() if k != "fetched_at"} for r in rows), key=lambda r: r["sample_id"]
        )
    assert tables["local"] == tables["remote"]
    assert any(r["duplicate_of"] for r in tables["remote"])
