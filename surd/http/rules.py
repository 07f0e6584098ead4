"""What the HTTP client decides, apart from how it waits: robots.txt, the per-host pace, the
honest User-Agent, block pages and Cloudflare challenges, the size cap, and one attempt's outcome
→ the answer, or the failure and the wait before the next try (`Retry-After` honoured)."""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
from protego import Protego

from surd import __version__
from surd.http.errors import FetchError
from surd.settings import CrawlSettings

Expect = Literal["json", "html", "bytes"]
RETRYABLE = {429, 500, 502, 503, 504, 520, 521, 522, 523, 524}
REGION_BLOCKED = "region_blocked"  # HTTP 451 (Civitai's REGION_BLOCKED): final, never retried
BLOCK_MARKERS = (
    b"window._cf_translation",
    b"cf-browser-verification",
    b"challenge-platform",
    b"Just a moment...",
    b"Attention Required! | Cloudflare",
    b"_cf_chl_opt",
    b"cf-chl-",
    b"Checking your browser before accessing",
)
CHALLENGE_STATUSES = {403, 429, 503}  # how managed challenges and blocks arrive
log = logging.getLogger("surd.http")


class Robots:
    """A site's robots.txt under RFC 9309 (protego: `*` and `$`, longest match, Allow vs
    Disallow), matched on our product token; `None` text means there is none (all allowed)."""

    def __init__(self, text: str | None) -> None:
        self._rules = Protego.parse(text) if text is not None else None

    def allowed(self, url: str, agent: str) -> bool:
        return self._rules is None or self._rules.can_fetch(url, agent)

    def crawl_delay(self, agent: str) -> float | None:
        """`Crawl-delay` for our agent: a floor on the time between requests to the host."""
        if self._rules is None:
            return None
        delay = self._rules.crawl_delay(agent)
        return float(delay) if delay is not None else None


def product_token(user_agent_header: str) -> str:
    """`SURD-builder/0.1 (+url; …)` → `SURD-builder`, the name robots.txt groups match."""
    return user_agent_header.split("/", 1)[0].strip()


@dataclass
class Response:
    url: str
    status: int
    headers: httpx.Headers
    content: bytes
    attempts: int = 1
    parsed: Any = None

    def json(self) -> Any:
        """The body as JSON (already parsed and checked when fetched with expect='json')."""
        return self.parsed if self.parsed is not None else json.loads(self.content)


@dataclass
class Pace:
    """Request slots of one host, `interval` apart, later while a block penalty lasts."""

    interval: float
    next_at: float = 0.0
    penalty_until: float = 0.0

    def reserve(self) -> float:
        """Book the next slot (the caller holds its host's lock); seconds to wait for it."""
        now = time.monotonic()
        start = max(now, self.next_at, self.penalty_until)
        self.next_at = start + self.interval
        return start - now


def user_agent(contact_url: str) -> str:
    return f"SURD-builder/{__version__} (+{contact_url}; dataset research crawler)"


def looks_blocked(content: bytes, expect: Expect) -> bool:
    head = content[:4096]
    if any(m in head for m in BLOCK_MARKERS):
        return True
    return expect == "json" and head.lstrip()[:1] == b"<"


def is_challenge(resp: httpx.Response) -> bool:
    """A Cloudflare managed challenge, known by its header alone (the body is not needed)."""
    mitigated = resp.headers.get("cf-mitigated", "").lower()
    return resp.status_code in CHALLENGE_STATUSES and mitigated == "challenge"


def challenge(resp: httpx.Response, url: str) -> tuple[FetchError, str | None]:
    return FetchError("blocked", url, f"HTTP {resp.status_code} challenge"), resp.headers.get("retry-after")


def may_be_challenge(resp: httpx.Response) -> bool:
    """An error answered by Cloudflare: its body says whether it is a challenge page."""
    return resp.status_code in CHALLENGE_STATUSES and "cloudflare" in resp.headers.get("server", "").lower()


def backoff_seconds(s: CrawlSettings, attempt: int, retry_after: str | None, factor: float = 1.0) -> float:
    """`Retry-After` (seconds or an HTTP date, honoured up to `retry_after_max_s`) when given,
    else exponential backoff with jitter."""
    if retry_after:
        if retry_after.strip().replace(".", "", 1).isdigit():
            return min(float(retry_after), s.retry_after_max_s)
        try:
            delta = parsedate_to_datetime(retry_after).timestamp() - time.time()
            return min(max(delta, 0.0), s.retry_after_max_s)
        except (TypeError, ValueError):
            retry_after = None  # unparseable: exponential backoff below
    base = s.backoff_base_s * factor * (2**attempt)
    return min(base * (0.5 + random.random()), s.backoff_max_s)


HeadCheck = Callable[[httpx.Headers], str | None]


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def floor_pace(pace: Pace, rules: Robots, agent: str) -> None:
    """robots.txt's Crawl-delay as a floor on the time between two requests to the host."""
    delay = rules.crawl_delay(agent)
    if delay is not None and delay > pace.interval:
        log.info("robots.txt asks for %.1f s between requests: pacing at that", delay)
        pace.interval = delay


def check_head(
    resp: httpx.Response, url: str, check_headers: HeadCheck | None, cap: int
) -> tuple[FetchError, str | None] | None:
    """Decide on status and headers before reading the body: retry (error, Retry-After),
    raise for a final failure, or None to read on (a Cloudflare error's body says if it is a
    challenge; check_body decides)."""
    if is_challenge(resp):
        return challenge(resp, url)
    if may_be_challenge(resp):
        return None
    if resp.status_code in RETRYABLE:
        return FetchError(f"http_{resp.status_code}", url), resp.headers.get("retry-after")
    if resp.status_code == 451:  # final: the site blocks this region, and a retry changes nothing
        raise FetchError(REGION_BLOCKED, url, "HTTP 451")
    if resp.status_code >= 400:
        raise FetchError(f"http_{resp.status_code}", url)
    if check_headers is not None:
        veto = check_headers(resp.headers)
        if veto:
            raise FetchError(veto, url)
    declared = resp.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > cap:
        raise FetchError("too_large", url, f"{declared} bytes")
    return None


def check_body(
    resp: httpx.Response, url: str, content: bytes, expect: Expect
) -> Response | tuple[FetchError, str | None]:
    """A block page or unparseable JSON is retried; anything else is the answer."""
    if resp.status_code >= 400:  # a Cloudflare error read for its body (see check_head)
        if looks_blocked(content, "html"):
            return challenge(resp, url)
        if resp.status_code in RETRYABLE:
            return FetchError(f"http_{resp.status_code}", url), resp.headers.get("retry-after")
        raise FetchError(f"http_{resp.status_code}", url)
    if expect != "bytes" and looks_blocked(content, expect):
        return FetchError("blocked", url), None
    parsed = None
    if expect == "json":
        try:
            parsed = json.loads(content)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return FetchError("bad_json", url), None  # truncated or garbled
    return Response(str(resp.url), resp.status_code, resp.headers, content, parsed=parsed)


Outcome = Response | tuple[FetchError, str | None] | httpx.HTTPError


def settle(
    s: CrawlSettings, pace: Pace, url: str, attempt: int, outcome: Outcome
) -> tuple[Response | None, FetchError, float]:
    """One attempt's outcome → the response, or the failure and the wait before the next try.
    A redirect loop is final; a block page also pushes the host's next slot back."""
    if isinstance(outcome, Response):
        outcome.attempts = attempt + 1
        return outcome, FetchError("ok", url), 0.0
    if isinstance(outcome, httpx.TooManyRedirects):
        raise FetchError("too_many_redirects", url) from None
    if isinstance(outcome, httpx.TimeoutException):
        return None, FetchError("timeout", url), backoff_seconds(s, attempt, None)
    if isinstance(outcome, httpx.HTTPError):
        return (
            None,
            FetchError("connection_error", url, type(outcome).__name__),
            backoff_seconds(s, attempt, None),
        )
    error, retry_after = outcome
    blocked = error.reason == "blocked"
    wait = backoff_seconds(s, attempt, retry_after, 4.0 if blocked else 1.0)
    if blocked:
        pace.penalty_until = time.monotonic() + wait
    if retry_after and wait >= 1:
        log.warning("%s: %s, waiting %.0f s as its Retry-After asks", url, error.reason, wait)
    return None, error, wait
