"""Crawls against the replay site on loopback, with scripted faults: no mocked HTTP client."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from surd import chain, pipeline
from surd.config import load_settings
from surd.settings import Settings
from surd.sources.replay import ReplaySite
from surd.stages.crawl import CrawlFailed, CrawlStats
from tests.conftest import FIXTURES
from tests.pace import assert_paced

CIVITAI = "/civitai/api/v1/images"


@pytest.fixture
def site():
    s = ReplaySite().start()
    yield s
    s.stop()


def failed_pass(cfg: Settings, source: str) -> CrawlStats:
    """A pass's stats, whether it ended well or stopped on a failure (which raises CrawlFailed)."""
    try:
        return pipeline.crawl(cfg, source)
    except CrawlFailed as exc:
        return exc.failed[0]


def settings(root: Path, site: ReplaySite, **crawl: object) -> Settings:
    urls = site.source_urls()
    return load_settings(
        data_root=root,
        crawl={
            "requests_per_second": 50.0,
            "backoff_base_s": 0.01,
            "max_retries": 2,
            "timeout_s": 2.0,
            **crawl,
        },
        sources={
            "civitai": {"base_url": urls["civitai"], "page_size": 25},
            "lexica": {
                "base_url": urls["lexica"],
                "queries": ["a", "b"],
                "requests_per_second": 50.0,
                "image_base_url": f"{site.base_url}/img/lexica",
            },
            "sdonline": {"base_url": urls["sdonline"], "listing_slugs": ["ui-design", "replay"]},
        },
    )


def raw_rows(root: Path) -> list[tuple]:
    rows = (
        chain.PIPELINE.data_dir(root)
        .table("raw_items")
        .read(["sample_id", "status", "reason", "complex_prompt"])
        .to_pylist()
    )
    return sorted(tuple(r.values()) for r in rows)


def pages(root: Path) -> list[dict]:
    return chain.PIPELINE.data_dir(root).table("crawl_pages").read().to_pylist()


def civitai_requests(site: ReplaySite) -> list[float]:
    return [t for t, path in site.requests if path.startswith(CIVITAI)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> list[tuple]:
    """The raw table of an uninterrupted civitai crawl."""
    s = ReplaySite().start()
    root = tmp_path_factory.mktemp("ref")
    out = pipeline.crawl(settings(root, s), "civitai")
    s.stop()
    assert out.stop_reason == "end" and out.pages_ok == 4
    return raw_rows(root)


def test_429_retry_after_is_honoured_and_the_rate_never_exceeded(
    tmp_path: Path, site: ReplaySite, reference
) -> None:
    too_many = (429, {"Retry-After": "1"}, b'{"error":"slow down"}', 0.0)
    site.script(CIVITAI, too_many, too_many)  # 429 for a while
    out = pipeline.crawl(settings(tmp_path, site, requests_per_second=5.0), "civitai")
    assert out.stop_reason == "end" and raw_rows(tmp_path) == reference
    times = civitai_requests(site)
    assert times[1] - times[0] >= 1.0 and times[2] - times[1] >= 1.0  # waited for Retry-After each time
    assert_paced(times, 1 / 5.0)  # ≤ 5 requests/s, as the server saw them


@pytest.mark.parametrize(
    "canned,reason",
    [
        ((503, {"Retry-After": "0"}, b'{"error":"Server busy, please retry shortly."}', 0.0), "http_503"),
        (
            (
                200,
                {"Content-Type": "text/html"},
                b"<!DOCTYPE html><html><head><title>Just a moment...</title>"
                b"<script>window._cf_translation={}</script></head></html>",
                0.0,
            ),
            "blocked",
        ),
        ((200, {}, b'{"items": [{"id": 1, "url": "https://x', 0.0), "bad_json"),
        ((200, {}, b'{"items": []}', 3.0), "timeout"),
    ],
)
def test_failed_page_is_recorded_then_resumed(
    tmp_path: Path, site: ReplaySite, reference, canned, reason
) -> None:
    cfg = settings(tmp_path, site, max_retries=1, timeout_s=1.0)
    site.script(CIVITAI, canned, canned)  # both tries of the first page fail
    with pytest.raises(CrawlFailed, match=f"crawl civitai failed: {reason}") as exc:
        pipeline.crawl(cfg, "civitai")
    first = asdict(exc.value.failed[0])
    assert first["pages_failed"] == 1 and first["stop_reason"].startswith(reason)
    [failed] = [p for p in pages(tmp_path) if p["status"] == "failed"]
    assert failed["reason"].startswith(reason) and failed["position"] == "start"
    second = pipeline.crawl(cfg, "civitai")  # resumes at the failed page
    assert second.stop_reason == "end" and raw_rows(tmp_path) == reference


def test_documented_error_bodies(tmp_path: Path, site: ReplaySite) -> None:
    cases = json.loads((FIXTURES / "civitai" / "errors_documented.json").read_text())["cases"]
    for i, case in enumerate(cases):
        root = tmp_path / str(i)
        site.script(
            CIVITAI,
            *[
                (
                    case["status"],
                    dict(case.get("headers") or {}) | {"Retry-After": "0"},
                    json.dumps(case["body"]).encode(),
                    0.0,
                )
            ]
            * 3,
        )
        out = failed_pass(settings(root, site, max_retries=1), "civitai")
        if case["status"] == 200:  # an empty page without a cursor is the end
            assert out.stop_reason == "end" and out.items_written == 0
        else:
            assert out.stop_reason == f"http_{case['status']}", case["case"]
        site._scripted.clear()


def test_repeating_cursor_stops_with_a_reason(tmp_path: Path, site: ReplaySite) -> None:
    _, page = site.civitai_page({"limit": ["25"]})
    page["metadata"]["nextCursor"] = "start"  # the server sends us back where we began
    site.script(CIVITAI, (200, {}, json.dumps(page).encode(), 0.0))
    out = pipeline.crawl(settings(tmp_path, site), "civitai")
    assert out.stop_reason == "repeated_cursor" and out.pages_ok == 1
    assert [p["reason"] for p in pages(tmp_path)] == ["repeated_cursor"]


def test_empty_page_with_a_cursor_is_not_the_end(tmp_path: Path, site: ReplaySite, reference) -> None:
    site.script(CIVITAI, (200, {}, b'{"items": [], "metadata": {"nextCursor": "0|1"}}', 0.0))
    out = pipeline.crawl(settings(tmp_path, site), "civitai")
    assert out.stop_reason == "end" and raw_rows(tmp_path) == reference


def test_robots_forbids_unless_overridden_and_the_override_is_recorded(
    tmp_path: Path, site: ReplaySite, reference
) -> None:
    site.robots = "User-agent: *\nDisallow: /civitai/api/\n"
    out = failed_pass(settings(tmp_path / "a", site), "civitai")
    assert out.stop_reason == "robots_disallowed" and not civitai_requests(site)
    cfg = settings(tmp_path / "b", site)
    cfg = load_settings(
        **{
            **json.loads(cfg.model_dump_json()),
            "sources": {
                **json.loads(cfg.sources.model_dump_json()),
                "civitai": {**json.loads(cfg.sources.civitai.model_dump_json()), "obey_robots": False},
            },
        }
    )
    assert pipeline.crawl(cfg, "civitai").stop_reason == "end"
    assert raw_rows(tmp_path / "b") == reference
    assert chain.PIPELINE.data_dir(tmp_path / "b").state("crawl-civitai")["robots"] == "overridden"
    assert {p["robots"] for p in chain.PIPELINE.data_dir(tmp_path / "b").table("raw_items").provenance()} == {
        "overridden"
    }


def test_incremental_pass_stops_at_known_items_full_pass_does_not(tmp_path: Path, site: ReplaySite) -> None:
    cfg = settings(tmp_path, site)
    assert pipeline.crawl(cfg, "civitai").pages_ok == 4
    again = pipeline.crawl(cfg, "civitai")
    assert again.stop_reason == "reached_known_items" and again.pages_ok == 1 and again.new_items == 0
    full = pipeline.crawl(cfg, "civitai", full=True)
    assert full.stop_reason == "end" and full.pages_ok == 4
    ids = [r[0] for r in raw_rows(tmp_path)]
    assert len(ids) == len(set(ids))


def test_lexica_search_and_infinite_feed(tmp_path: Path, site: ReplaySite) -> None:
    cfg = settings(tmp_path / "s", site)
    assert pipeline.crawl(cfg, "lexica").items_written == 2  # the same image for both queries
    assert len(raw_rows(tmp_path / "s")) == 1
    feed = json.loads(cfg.model_dump_json())
    feed["sources"]["lexica"]["mode"] = "infinite"
    feed["sources"]["civitai"].pop("api_key", None)
    cfg2 = load_settings(**{**feed, "data_root": str(tmp_path / "i")})
    out = pipeline.crawl(cfg2, "lexica")
    assert out.stop_reason == "end"
    [row] = chain.PIPELINE.data_dir(tmp_path / "i").table("raw_items").read().to_pylist()
    assert row["complex_prompt"] == "cute chubby blue fruits icons for mobile game ui"
    assert row["image_url"] == f"{site.base_url}/img/lexica/full_jpg/0482ee68-0368-4eca-8846-5930db866b33"


def test_sdonline_missing_detail_pages_have_reasons(tmp_path: Path, site: ReplaySite) -> None:
    out = pipeline.crawl(settings(tmp_path, site), "sdonline")
    assert out.stop_reason == "end" and out.items_written == 1
    failed = [p for p in pages(tmp_path) if p["status"] == "failed"]
    assert sorted(p["reason"] for p in failed) == ["http_404", "http_404"]
    assert all("/image/" in p["url"] for p in failed)


@pytest.mark.slow  # worker processes or the CLI in a subprocess
def test_sigkill_mid_crawl_resumes_to_the_same_table(tmp_path: Path, site: ReplaySite, reference) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SURD_")}
    env |= {
        "SURD_DATA_ROOT": str(tmp_path),
        "SURD_SOURCES__CIVITAI__PAGE_SIZE": "25",
        "SURD_CRAWL__REQUESTS_PER_SECOND": "50",
    }
    cmd = [sys.executable, "-m", "surd", "crawl", "civitai", "--base-url", site.source_urls()["civitai"]]
    for kill_at in ("raw_items:2", "crawl_pages:1"):
        run = subprocess.run(cmd, env=env | {"SURD_FAULT_KILL_AT": kill_at}, capture_output=True, timeout=120)
        assert run.returncode == -signal.SIGKILL, run.stdout[-500:]
    start = time.monotonic()
    assert subprocess.run(cmd, env=env, capture_output=True, timeout=120).returncode == 0
    assert time.monotonic() - start < 120
    assert raw_rows(tmp_path) == reference


def test_api_key_is_sent_as_bearer_and_never_stored(tmp_path: Path, site: ReplaySite, monkeypatch) -> None:
    monkeypatch.setenv("SURD_SOURCES__CIVITAI__API_KEY", "sk-live-12345")
    assert pipeline.crawl(settings(tmp_path, site), "civitai").stop_reason == "end"
    assert "Bearer sk-live-12345" in site.auth_seen
    for f in tmp_path.rglob("*"):
        if f.is_file():
            assert b"sk-live-12345" not in f.read_bytes(), f


def test_per_source_rate_overrides_the_crawl_default(tmp_path: Path, site: ReplaySite) -> None:
    from surd.stages.crawl import politeness

    cfg = settings(tmp_path, site, requests_per_second=9.0)
    assert politeness(cfg, "civitai").requests_per_second == 9.0
    assert politeness(cfg, "lexica").requests_per_second == 50.0
    assert load_settings().sources.lexica.requests_per_second == pytest.approx(1 / 3)
