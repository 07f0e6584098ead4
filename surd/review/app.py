"""The review server: the steward UI (`web.py`) and the JSON API (`api.py`) on one database.

Security for every response: `nosniff`, a strict Content-Security-Policy (no inline script or
style), no framing, no referrer, and HTML never cached. Sessions are signed HTTP-only cookies
(`Secure` unless `review.secure_cookies` is off for plain-HTTP loopback use).
"""

from __future__ import annotations

import logging
import secrets
from collections import defaultdict, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.staticfiles import StaticFiles
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.middleware.sessions import SessionMiddleware

from surd.review import api, judge, queue, web
from surd.settings import Settings

log = logging.getLogger(__name__)
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; connect-src 'self'"
)


class SecurityHeaders(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "no-referrer"
        if response.headers.get("content-type", "").startswith("text/html"):
            response.headers["Cache-Control"] = "no-store"
        return response


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
    )
    app.state.engine = engine
    app.state.settings = settings
    app.state.login_attempts = defaultdict(deque)
    if settings.review.session_secret is not None:
        secret = settings.review.session_secret.get_secret_value()
    else:
        secret = secrets.token_hex(32)
        log.warning("review.session_secret is not set: sessions end when this server restarts")
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
    app.include_router(web.router)
    app.include_router(judge.router)
    app.include_router(api.router)
    return app


def from_env() -> FastAPI:
    """The app for `surd review serve` workers: settings from SURD_* and $SURD_CONFIG."""
    from surd.settings import load_settings

    return create_app(load_settings())
