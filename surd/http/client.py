"""The one polite HTTP client, on asyncio, and its synchronous face.

`AsyncPoliteClient` holds every rule of reading a site (surd.http.rules): per-host rate and
concurrency, robots.txt fetched once per origin (its Crawl-delay a floor on the pace), retries
with backoff that honour `Retry-After`, block pages and challenges, a redirect cap and a size cap.
`PoliteClient` is the same client for synchronous callers (the crawl, its threads): it runs one
`AsyncPoliteClient` on an event loop of its own, in a thread, so there is one implementation of
all of it, and the limits hold across every thread that shares the client.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx

from surd.http.errors import FetchError
from surd.http.rules import (
    Expect,
    HeadCheck,
    Outcome,
    Pace,
    Response,
    Robots,
    check_body,
    check_head,
    floor_pace,
    origin,
    product_token,
    settle,
    user_agent,
)
from surd.settings import CrawlSettings

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]


@dataclass
class _Host:
    pace: Pace
    slots: asyncio.Semaphore
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def wait_turn(self, sleep: Sleep) -> None:
        async with self.lock:
            delay = self.pace.reserve()
        if delay > 0:
            await sleep(delay)


class AsyncPoliteClient:
    """Never more than the per-host rate and concurrency; every failure a `FetchError` with the
    reason stored beside the item (`http_404`, `timeout`, `blocked`, `too_large`, …).

    `robots_cache` may outlive the client (one robots.txt fetch per origin per worker process);
    `sleep` is how it waits (for pacing and backoff)."""

    def __init__(
        self,
        settings: CrawlSettings,
        *,
        obey_robots: bool | None = None,
        headers: dict[str, str] | None = None,
        max_connections: int = 256,
        robots_cache: dict[str, Robots] | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.settings = settings
        self.obey_robots = settings.obey_robots if obey_robots is None else obey_robots
        self._sleep = sleep
        self._client = httpx.AsyncClient(
            timeout=settings.timeout_s,
            follow_redirects=True,
            max_redirects=5,
            headers={"User-Agent": user_agent(settings.contact_url), **(headers or {})},
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )
        self._hosts: dict[str, _Host] = {}
        self._robots: dict[str, asyncio.Future[Robots]] = {}
        self._known = robots_cache if robots_cache is not None else {}
        self.agent = product_token(self._client.headers["User-Agent"])
        self.requests_sent = 0

    async def __aenter__(self) -> AsyncPoliteClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    def _host(self, url: str) -> _Host:
        key = urlsplit(url).netloc
        if key not in self._hosts:
            self._hosts[key] = _Host(
                pace=Pace(1.0 / self.settings.requests_per_second),
                slots=asyncio.Semaphore(self.settings.max_concurrency),
            )
        return self._hosts[key]

    async def allowed(self, url: str) -> bool:
        """robots.txt (fetched once per origin, whatever the number of waiters) allows `url`;
        its Crawl-delay becomes a floor on the host's pace."""
        if not self.obey_robots:
            return True
        site = origin(url)
        if site not in self._known:
            if site not in self._robots:
                self._robots[site] = asyncio.ensure_future(self._fetch_robots(site))
            try:
                self._known[site] = await self._robots[site]
            except FetchError:
                self._robots.pop(site, None)  # unreachable robots.txt: do not guess, ask again later
                raise
        rules = self._known[site]
        floor_pace(self._host(url).pace, rules, self.agent)
        return rules.allowed(url, self.agent)

    async def _fetch_robots(self, site: str) -> Robots:
        try:
            resp = await self._send("GET", f"{site}/robots.txt", "bytes", retries=1)
        except FetchError as exc:
            if exc.reason.startswith("http_4"):
                return Robots(None)  # no robots.txt: everything allowed
            raise
        return Robots(resp.content.decode("utf-8", "replace"))

    async def get(
        self,
        url: str,
        *,
        expect: Expect = "bytes",
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        check_headers: HeadCheck | None = None,
    ) -> Response:
        """GET with politeness and retries. `check_headers` may veto a body before it is read."""
        full = str(httpx.URL(url, params=params)) if params else url
        if not await self.allowed(full):
            raise FetchError("robots_disallowed", full)
        return await self._send("GET", full, expect, headers, check_headers)

    async def post_json(self, url: str, body: dict[str, object]) -> Response:
        if not await self.allowed(url):
            raise FetchError("robots_disallowed", url)
        return await self._send("POST", url, "json", body=body)

    async def _send(
        self,
        method: str,
        url: str,
        expect: Expect,
        headers: dict[str, str] | None = None,
        check_headers: HeadCheck | None = None,
        retries: int | None = None,
        body: dict[str, object] | None = None,
    ) -> Response:
        retries = self.settings.max_retries if retries is None else retries
        host = self._host(url)
        last: FetchError | None = None
        for attempt in range(retries + 1):
            await host.wait_turn(self._sleep)
            async with host.slots:
                self.requests_sent += 1
                outcome: Outcome
                try:
                    outcome = await self._once(method, url, expect, headers, check_headers, body)
                except (httpx.TimeoutException, httpx.TooManyRedirects, httpx.TransportError) as exc:
                    outcome = exc
                resp, last, wait = settle(self.settings, host.pace, url, attempt, outcome)
                if resp is not None:
                    return resp
            if attempt < retries:
                await self._sleep(wait)
        assert last is not None
        raise last

    async def _once(
        self,
        method: str,
        url: str,
        expect: Expect,
        headers: dict[str, str] | None,
        check_headers: HeadCheck | None,
        body: dict[str, object] | None,
    ) -> Response | tuple[FetchError, str | None]:
        cap = self.settings.max_response_bytes
        async with self._client.stream(method, url, headers=headers, json=body) as resp:
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


class PoliteClient:
    """`AsyncPoliteClient` for synchronous callers: thread-safe, the limits shared by every thread.

    `sleep` is how it waits (the CLI shows the politeness waits; it runs off the event loop, so
    one caller's wait never holds up another's request)."""

    def __init__(
        self,
        settings: CrawlSettings,
        *,
        obey_robots: bool | None = None,
        headers: dict[str, str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="polite-client", daemon=True)
        self._thread.start()

        async def wait(seconds: float) -> None:
            if sleep is time.sleep:
                await asyncio.sleep(seconds)
            else:
                await asyncio.get_running_loop().run_in_executor(None, sleep, seconds)

        async def make() -> AsyncPoliteClient:  # its locks and semaphores belong to this loop
            return AsyncPoliteClient(settings, obey_robots=obey_robots, headers=headers, sleep=wait)

        self._client = self._run(make())
        self.agent = self._client.agent

    @property
    def requests_sent(self) -> int:
        return self._client.requests_sent

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # an interrupted caller (Ctrl-C) leaves no request running
            raise

    def allowed(self, url: str) -> bool:
        return self._run(self._client.allowed(url))

    def get(
        self,
        url: str,
        *,
        expect: Expect = "json",
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        check_headers: HeadCheck | None = None,
    ) -> Response:
        """GET with politeness and retries. `check_headers` may veto a body before it is read."""
        return self._run(
            self._client.get(url, expect=expect, params=params, headers=headers, check_headers=check_headers)
        )

    def post_json(self, url: str, body: dict[str, object]) -> Response:
        return self._run(self._client.post_json(url, body))

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._run(self._client.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> PoliteClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
