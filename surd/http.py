"""The shared HTTP layer: honest User-Agent, per-host rate and concurrency limits, retries with
backoff that honours `Retry-After`, block-page detection, robots.txt, timeouts and a size cap.

Every failure ends as a `FetchError` whose `reason` is stored with the item or page
(``http_404``, ``timeout``, ``blocked``, ``too_large``, ``robots_disallowed``, ...).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
from protego import Protego

from surd import __version__
from surd.settings import CrawlSettings

Expect = Literal["json", "html", "bytes"]
RETRYABLE = {429, 500, 502, 503, 504, 520, 521, 522, 523, 524}
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


class FetchError(Exception):
    def __init__(self, reason: str, url: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {url} {detail}".strip())
        self.reason = reason
        self.url = url


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
class _Pace:
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


@dataclass
class _Host:
    pace: _Pace
    slots: threading.BoundedSemaphore
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_turn(self, sleep: Callable[[float], None]) -> None:
        with self.lock:
            delay = self.pace.reserve()
        if delay > 0:
            sleep(delay)


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


def _challenge(resp: httpx.Response, url: str) -> tuple[FetchError, str | None]:
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


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _floor_pace(pace: _Pace, rules: Robots, agent: str) -> None:
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
        return _challenge(resp, url)
    if may_be_challenge(resp):
        return None
    if resp.status_code in RETRYABLE:
        return FetchError(f"http_{resp.status_code}", url), resp.headers.get("retry-after")
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
            return _challenge(resp, url)
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
    s: CrawlSettings, pace: _Pace, url: str, attempt: int, outcome: Outcome
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


class PoliteClient:
    """A thread-safe HTTP client that never exceeds its per-host rate and concurrency."""

    def __init__(
        self,
        settings: CrawlSettings,
        *,
        obey_robots: bool | None = None,
        headers: dict[str, str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.obey_robots = settings.obey_robots if obey_robots is None else obey_robots
        self._sleep = sleep
        self._client = httpx.Client(
            timeout=settings.timeout_s,
            follow_redirects=True,
            max_redirects=5,
            headers={"User-Agent": user_agent(settings.contact_url), **(headers or {})},
        )
        self._hosts: dict[str, _Host] = {}
        self._robots: dict[str, Robots] = {}
        self._lock = threading.Lock()
        self.agent = product_token(self._client.headers["User-Agent"])
        self.requests_sent = 0

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> PoliteClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _host(self, url: str) -> _Host:
        key = urlsplit(url).netloc
        with self._lock:
            if key not in self._hosts:
                self._hosts[key] = _Host(
                    pace=_Pace(1.0 / self.settings.requests_per_second),
                    slots=threading.BoundedSemaphore(self.settings.max_concurrency),
                )
            return self._hosts[key]

    def allowed(self, url: str) -> bool:
        """robots.txt (fetched once per origin) allows `url`; its Crawl-delay becomes a floor
        on the host's pace."""
        if not self.obey_robots:
            return True
        origin = _origin(url)
        with self._lock:
            rules = self._robots.get(origin)
        if rules is None:
            try:
                resp = self._send(f"{origin}/robots.txt", "bytes", None, None, retries=1)
                rules = Robots(resp.content.decode("utf-8", "replace"))
            except FetchError as exc:
                if not exc.reason.startswith("http_4"):
                    raise  # unreachable robots.txt: do not guess
                rules = Robots(None)  # no robots.txt: everything allowed
            _floor_pace(self._host(url).pace, rules, self.agent)
            with self._lock:
                self._robots[origin] = rules
        return rules.allowed(url, self.agent)

    def get(
        self,
        url: str,
        *,
        expect: Expect = "json",
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        check_headers: Callable[[httpx.Headers], str | None] | None = None,
    ) -> Response:
        """GET with politeness and retries. `check_headers` may veto a body before it is read."""
        full = str(httpx.URL(url, params=params)) if params else url
        if not self.allowed(full):
            raise FetchError("robots_disallowed", full)
        return self._send(full, expect, headers, check_headers, self.settings.max_retries)

    def post_json(self, url: str, body: dict[str, object]) -> Response:
        if not self.allowed(url):
            raise FetchError("robots_disallowed", url)
        return self._send(url, "json", None, None, self.settings.max_retries, body)

    def _send(
        self,
        url: str,
        expect: Expect,
        headers: dict[str, str] | None,
        check_headers: Callable[[httpx.Headers], str | None] | None,
        retries: int,
        body: dict[str, object] | None = None,
    ) -> Response:
        host = self._host(url)
        last: FetchError | None = None
        for attempt in range(retries + 1):
            host.wait_turn(self._sleep)
            with host.slots:
                self.requests_sent += 1
                outcome: Outcome
                try:
                    outcome = self._once(url, expect, headers, check_headers, body)
                except (httpx.TimeoutException, httpx.TooManyRedirects, httpx.TransportError) as exc:
                    outcome = exc
                resp, last, wait = settle(self.settings, host.pace, url, attempt, outcome)
                if resp is not None:
                    return resp
            if attempt < retries:
                self._sleep(wait)
        assert last is not None
        raise last

    def _once(
        self,
        url: str,
        expect: Expect,
        headers: dict[str, str] | None,
        check_headers: Callable[[httpx.Headers], str | None] | None,
        body: dict[str, object] | None,
    ) -> Response | tuple[FetchError, str | None]:
        method = "POST" if body is not None else "GET"
        with self._client.stream(method, url, headers=headers, json=body) as resp:
            early = check_head(resp, url, check_headers, self.settings.max_response_bytes)
            if early is not None:
                return early
            chunks, size = [], 0
            for chunk in resp.iter_bytes():
                size += len(chunk)
                if size > self.settings.max_response_bytes:
                    raise FetchError("too_large", url, f"> {self.settings.max_response_bytes} bytes")
                chunks.append(chunk)
            return check_body(resp, url, b"".join(chunks), expect)


@dataclass
class _AsyncHost:
    pace: _Pace
    slots: asyncio.Semaphore
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def wait_turn(self) -> None:
        async with self.lock:
            delay = self.pace.reserve()
        if delay > 0:
            await asyncio.sleep(delay)


class AsyncPoliteClient:
    """The asyncio twin of PoliteClient for bulk fetches (images): the same per-host rate and
    concurrency, retries, `Retry-After`, block pages, robots.txt, redirect cap and size cap."""

    def __init__(
        self,
        settings: CrawlSettings,
        *,
        max_connections: int = 256,
        robots_cache: dict[str, Robots] | None = None,
    ) -> None:
        self.settings = settings
        self._client = httpx.AsyncClient(
            timeout=settings.timeout_s,
            follow_redirects=True,
            max_redirects=5,
            headers={"User-Agent": user_agent(settings.contact_url)},
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )
        self._hosts: dict[str, _AsyncHost] = {}
        self._robots: dict[str, asyncio.Future[Robots]] = {}
        self._known = robots_cache if robots_cache is not None else {}  # may outlive this client
        self.agent = product_token(self._client.headers["User-Agent"])
        self.requests_sent = 0

    async def __aenter__(self) -> AsyncPoliteClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.aclose()

    def _host(self, url: str) -> _AsyncHost:
        key = urlsplit(url).netloc
        if key not in self._hosts:
            self._hosts[key] = _AsyncHost(
                pace=_Pace(1.0 / self.settings.requests_per_second),
                slots=asyncio.Semaphore(self.settings.max_concurrency),
            )
        return self._hosts[key]

    async def allowed(self, url: str) -> bool:
        if not self.settings.obey_robots:
            return True
        origin = _origin(url)
        if origin not in self._known:
            if origin not in self._robots:  # one fetch per origin, whatever the number of waiters
                self._robots[origin] = asyncio.ensure_future(self._fetch_robots(origin))
            try:
                self._known[origin] = await self._robots[origin]
            except FetchError:
                self._robots.pop(origin, None)  # unreachable robots.txt: do not guess, ask again later
                raise
        rules = self._known[origin]
        _floor_pace(self._host(url).pace, rules, self.agent)
        return rules.allowed(url, self.agent)

    async def _fetch_robots(self, origin: str) -> Robots:
        try:
            resp = await self._send(f"{origin}/robots.txt", "bytes", None, retries=1)
        except FetchError as exc:
            if exc.reason.startswith("http_4"):
                return Robots(None)  # no robots.txt: everything allowed
            raise
        return Robots(resp.content.decode("utf-8", "replace"))

    async def get(
        self, url: str, *, expect: Expect = "bytes", check_headers: HeadCheck | None = None
    ) -> Response:
        if not await self.allowed(url):
            raise FetchError("robots_disallowed", url)
        return await self._send(url, expect, check_headers, self.settings.max_retries)

    async def _send(
        self, url: str, expect: Expect, check_headers: HeadCheck | None, retries: int
    ) -> Response:
        host = self._host(url)
        last: FetchError | None = None
        for attempt in range(retries + 1):
            await host.wait_turn()
            async with host.slots:
                self.requests_sent += 1
                outcome: Outcome
                try:
                    outcome = await self._once(url, expect, check_headers)
                except (httpx.TimeoutException, httpx.TooManyRedirects, httpx.TransportError) as exc:
                    outcome = exc
                resp, last, wait = settle(self.settings, host.pace, url, attempt, outcome)
                if resp is not None:
                    return resp
            if attempt < retries:
                await asyncio.sleep(wait)
        assert last is not None
        raise last

    async def _once(
        self, url: str, expect: Expect, check_headers: HeadCheck | None
    ) -> Response | tuple[FetchError, str | None]:
        cap = self.settings.max_response_bytes
        async with self._client.stream("GET", url) as resp:
            early = check_head(resp, url, check_headers, cap)
            if early is not None:
                return early
            chunks, size = [], 0
            async for chunk in resp.aiter_bytes():
                size += len(chunk)
                if size > cap:
                    raise FetchError("too_large", url, f"> {cap} bytes")
                chunks.append(chunk)
            return check_body(resp, url, b"".join(chunks), expect)
