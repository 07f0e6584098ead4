"""The review server: the steward UI (`web.py`) and the JSON API (`api.py`) on one database.

Security for every response: `nosniff`, a strict Content-Security-Policy (no inline script or
style), no framing, no referrer, and HTML never cached. Sessions are signed HTTP-only cookies
(`Secure` unless `review.secure_cookies` is off for plain-HTTP loopback use).
"""

from __future__ import annotations

import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.middleware.sessions import SessionMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from surd.app.web import admin, api, errors, grid, images, judge, web
from surd.config import load_settings
from surd.review import queue
from surd.settings import Settings

log = logging.getLogger(__name__)
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; connect-src 'self'"
)


BUSY_RETRY_S = 30
STATIC_MAX_AGE_S = 600  # a new release of the page scripts reaches every steward within 10 minutes


class TooLarge(StarletteHTTPException):
    """A request body past `review.max_body_bytes` (an HTTP error, so the body parser passes it on)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over {limit} bytes")


class BodyLimit:
    """Refuse a request body past `limit` bytes with 413: at once when its Content-Length says so,
    else as soon as the bytes received pass it (a body is never read whole to find out)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await self._refuse(scope, receive, send)
            return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise TooLarge(self.limit)
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except TooLarge:
            if not started:
                await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        text = f"request body over {self.limit} bytes"
        await PlainTextResponse(text, status_code=413)(scope, receive, send)


def _busy(exc: Exception) -> bool:
    return isinstance(exc, sa_exc.OperationalError) and any(
        w in str(exc) for w in ("database is locked", "database is busy", "lock timeout")
    )


class SecurityHeaders(BaseHTTPMiddleware):
    """The headers of every response, errors included; nothing is cached unless a route says so
    (images: private), so API answers and exports never sit in a shared cache; `Server-Timing`
    says how long the server took, `X-Request-Id` which response this is."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        started = time.perf_counter()
        try:
            response = await call_next(request)
        except Exception as exc:
            if _busy(exc):  # another process holds the review database's write lock
                log.warning("%s %s: the review database is busy", request.method, request.url.path)
                response = busy_response(request)
            else:
                log.exception("%s %s failed", request.method, request.url.path)
                response = PlainTextResponse("internal error", status_code=500)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "no-referrer"
        if request.url.path.startswith("/static/"):  # the page's CSS and script: revalidated often
            response.headers["Cache-Control"] = f"public, max-age={STATIC_MAX_AGE_S}"
        elif "cache-control" not in response.headers or response.headers.get("content-type", "").startswith(
            "text/html"
        ):
            response.headers["Cache-Control"] = "no-store"
        # the time this server spent (browsers' dev tools show it; the review benchmark reads it),
        # and an id for the response (to match a report or a log line; a cached copy repeats it)
        response.headers["Server-Timing"] = f"app;dur={1000 * (time.perf_counter() - started):.1f}"
        response.headers["X-Request-Id"] = uuid.uuid4().hex[:16]
        return response


def busy_response(request: Request) -> Response:
    """503 with Retry-After: JSON for the API, a page a person can read for the web."""
    headers = {"Retry-After": str(BUSY_RETRY_S)}
    message = f"The review database is busy; try again in {BUSY_RETRY_S} seconds."
    if request.url.path.startswith("/api/"):
        return JSONResponse({"detail": message}, status_code=503, headers=headers)
    return PlainTextResponse(message, status_code=503, headers=headers)


def create_app(settings: Settings) -> FastAPI:
    engine = queue.connect(settings.review_database_url)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        engine.dispose()

    app = FastAPI(
        lifespan=lifespan,
        title="SURD review API",
        version="2",
        description="Claim, decide and export review items. Every route needs `Authorization: Bearer <token>`"
        " (`surd review add-steward NAME --token`).",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        redirect_slashes=False,  # its redirects would be built from the Host header
    )
    app.add_exception_handler(RequestValidationError, errors.invalid)
    app.add_exception_handler(StarletteHTTPException, errors.http_error)
    app.state.engine = engine
    app.state.settings = settings
    if settings.review.session_secret is not None:
        secret = settings.review.session_secret.get_secret_value()
    else:
        secret = secrets.token_hex(32)
        log.warning("review.session_secret is not set: sessions end when this server restarts")
    app.add_middleware(BodyLimit, limit=settings.review.max_body_bytes)  # inside the headers
    app.add_middleware(SecurityHeaders)
    app.add_middleware(
        SessionMiddleware,
        secret_key=secret,
        https_only=settings.review.secure_cookies,
        same_site="strict",
        max_age=settings.review.session_max_age_s,
        session_cookie="surd_review",
    )
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")
    for module in (web, grid, images, admin, judge, api):
        app.include_router(module.router)
    return app


def from_env() -> FastAPI:
    """The app for `surd review serve` workers: settings from SURD_* and $SURD_CONFIG."""

    return create_app(load_settings())
