"""The real sites' rules: robots.txt as RFC 9309 reads it, Crawl-delay, Retry-After, challenges.

Over the replay site on loopback (a real HTTP server), with civitai's API at the root path as on
civitai.com, so its robots.txt can be served in its real shape."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from surd import pipeline
from surd.config import load_settings
from surd.http.rules import Robots, backoff_seconds
from surd.settings import CrawlSettings
from surd.sources.replay import ReplaySite
from surd.stages.crawl import CrawlFailed
from tests.pace import assert_paced

API = "/api/v1/images"
CIVITAI_ROBOTS = (  # civitai.com's rule shape (SOURCES.md: src/pages/robots.txt/index.tsx)
    "User-agent: *\nDisallow: /api/*\nAllow: /api/trpc/*\nDisallow: /user/*/collections$\n"
)
CHALLENGE_BODY = (
    b"<!DOCTYPE html><html><head><title>Just a moment...</title></head><body>"
    b"<script>window._cf_chl_opt={cType: 'managed'}</script></body></html>"
)


@pytest.fixture
def site():
    s = ReplaySite().start()
    yield s
    s.stop()


def civitai_at_root(root: Path, site: ReplaySite, obey: bool | None = None, **crawl: object):
    return load_settings(
        data_root=root,
        crawl={"requests_per_second": 50.0, "backoff_base_s": 0.01, "max_retries": 1, **crawl},
        sources={"civitai": {"base_url": site.base_url, "page_size": 25, "obey_robots": obey}},
    )


def api_requests(site: ReplaySite) -> list[float]:
    return [t for t, path in site.requests if path.startswith("/api/")]


def test_rfc9309_wildcards_end_anchors_and_longest_match() -> None:
    r = Robots(CIVITAI_ROBOTS)
    agent = "SURD-builder"
    assert not r.allowed("https://civitai.com/api/v1/images?limit=200", agent)
    assert r.allowed("https://civitai.com/api/trpc/image.getInfinite", agent)  # the longer Allow wins
    assert r.allowed("https://civitai.com/images/123", agent)
    assert not r.allowed("https://civitai.com/user/bob/collections", agent)
    assert r.allowed("https://civitai.com/user/bob/collections/2", agent)  # `$` anchors the end
    assert Robots(None).allowed("https://x/anything", agent)


def test_civitai_robots_shape_stops_the_crawl_before_any_api_request(
    tmp_path: Path, site: ReplaySite
) -> None:
    site.robots = CIVITAI_ROBOTS
    with pytest.raises(CrawlFailed, match="robots_disallowed") as exc:
        pipeline.crawl(civitai_at_root(tmp_path / "a", site), "civitai")
    assert exc.value.failed[0].stop_reason == "robots_disallowed"
    assert api_requests(site) == []
    # the explicit override crawls, and says so in the pass's record
    out = pipeline.crawl(civitai_at_root(tmp_path / "b", site, obey=False), "civitai")
    assert out.stop_reason == "end" and out.items_written > 0 and api_requests(site)
    state = json.loads((tmp_path / "b" / "state" / "crawl-civitai.json").read_text())
    assert state["robots"] == "overridden"


def test_crawl_delay_is_a_floor_on_the_pace(tmp_path: Path, site: ReplaySite) -> None:
    site.robots = "User-agent: *\nCrawl-delay: 0.4\n"
    out = pipeline.crawl(civitai_at_root(tmp_path, site), "civitai")  # 50 requests/s asked for
    times = api_requests(site)
    assert out.pages_ok == len(times) >= 3
    assert_paced(times, 0.4)


def test_retry_after_is_honoured_up_to_its_own_ceiling() -> None:
    s = CrawlSettings(backoff_max_s=60, retry_after_max_s=900)
    assert backoff_seconds(s, 0, "300") == 300  # past our own backoff cap
    assert backoff_seconds(s, 0, "7200") == 900
    assert load_settings().crawl.retry_after_max_s >= 600


@pytest.mark.parametrize(
    "headers",
    [
        {"cf-mitigated": "challenge", "Server": "cloudflare", "Content-Type": "text/html"},
        {"Server": "cloudflare", "Content-Type": "text/html"},  # no header: the body tells
    ],
)
def test_a_403_challenge_is_a_block_and_a_failed_pass(
    tmp_path: Path, site: ReplaySite, headers: dict
) -> None:
    site.script(API, *[(403, headers, CHALLENGE_BODY, 0.0)] * 2)
    with pytest.raises(CrawlFailed) as exc:
        pipeline.crawl(civitai_at_root(tmp_path, site), "civitai")
    message = str(exc.value)
    assert exc.value.failed[0].stop_reason == "blocked"
    assert "crawl civitai failed: blocked at" in message and "API key" in message


def test_a_plain_403_is_not_a_challenge(tmp_path: Path, site: ReplaySite) -> None:
    site.script(API, (403, {"Server": "cloudflare"}, b"<html>Forbidden</html>", 0.0))
    with pytest.raises(CrawlFailed) as exc:
        pipeline.crawl(civitai_at_root(tmp_path, site), "civitai")
    assert exc.value.failed[0].stop_reason == "http_403"


@pytest.mark.slow  # worker processes or the CLI in a subprocess
def test_the_cli_exits_4_with_one_line_on_a_challenge(tmp_path: Path, site: ReplaySite) -> None:
    site.script(API, *[(403, {"cf-mitigated": "challenge"}, CHALLENGE_BODY, 0.0)] * 6)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SURD_")}
    env |= {
        "SURD_DATA_ROOT": str(tmp_path),
        "SURD_CRAWL__MAX_RETRIES": "1",
        "SURD_CRAWL__BACKOFF_BASE_S": "0.01",
    }
    surd = str(Path(sys.executable).parent / "surd")
    run = subprocess.run(
        [surd, "crawl", "civitai", "--base-url", site.base_url],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 4 and run.stdout == ""
    [line] = [ln for ln in run.stderr.splitlines() if ln.startswith("error:")]
    assert f"crawl civitai failed: blocked at {site.base_url}{API}" in line and "Traceback" not in run.stderr
