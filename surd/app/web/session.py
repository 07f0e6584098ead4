"""Who a request is, for every web and judge route (FastAPI dependencies, as the API's `caller`):
a signed-in steward whose session key is still the account's (logout, a password reset, a role
change and removal all change or drop the key, so every copy of the cookie ends at once), the
admin role where asked, the CSRF token of every POST, and page rendering with the guidelines."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from surd.review import auth, guidelines, queries, queue
from surd.review.filters import SORTS
from surd.sources import SOURCES
from surd.sources.safety import LEVELS, level_name

templates = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"), autoescape=select_autoescape(default=True)
)
templates.tests["web_url"] = lambda v: isinstance(v, str) and v.startswith(("https://", "http://"))
MAX_REMEMBERED = 40  # items a session remembers as skipped or revealed: the cookie stays < 4 KB


class Session:
    """The steward of a request, checked against the database on every request."""

    def __init__(self, request: Request, admin: bool = False) -> None:
        name = request.session.get("user")
        if not name:
            raise HTTPException(status_code=303, headers={"Location": "/login"})
        self.request = request
        self.name = str(name)
        self.engine = request.app.state.engine
        self.settings = request.app.state.settings
        account = auth.account(self.engine, self.name)
        held = str(request.session.get("key", ""))
        if account is None or not secrets.compare_digest(held.encode(), account[1].encode()):
            request.session.clear()
            raise HTTPException(status_code=303, headers={"Location": "/login"})
        self.role = account[0]
        self.csrf = str(request.session["csrf"])
        if admin and self.role != "admin":
            raise HTTPException(status_code=403, detail="admins only")

    def check_csrf(self, token: str) -> None:
        if not secrets.compare_digest(token.encode(), self.csrf.encode()):
            raise HTTPException(status_code=403, detail="bad CSRF token: reload the page and try again")

    @property
    def filters(self) -> queue.Filters:
        f = self.request.session.get("filters") or {}
        levels = f.get("nsfw_levels")
        return queue.Filters(
            f.get("source"),
            f.get("margin_min"),
            f.get("margin_max"),
            tuple(levels) if levels else None,
            f.get("safety_max"),
            text=f.get("text"),
            sort=f.get("sort") or "queue",
            exclude=tuple(self.remembered("skipped")),
        )

    def remembered(self, what: str) -> list[str]:
        return list(self.request.session.get(what) or [])

    def remember(self, what: str, sample_id: str) -> None:
        """Keep an item in this session's list `what` (skipped, revealed), the newest last."""
        kept = [x for x in self.remembered(what) if x != sample_id][-(MAX_REMEMBERED - 1) :]
        self.request.session[what] = [*kept, sample_id]

    @property
    def guidelines(self) -> guidelines.Guidelines | None:
        return guidelines.load(self.settings.review.guidelines)

    @property
    def guideline_version(self) -> str | None:
        return guidelines.version(self.settings.review.guidelines)

    def render(self, template: str, status: int = 200, **extra: Any) -> HTMLResponse:
        ctx = {
            "user": self.name,
            "role": self.role,
            "csrf": self.csrf,
            "progress": queries.progress(self.engine),
            "filters": self.filters,
            "sorts": SORTS,
            "sources": SOURCES,
            "levels": LEVELS,
            "level_name": level_name,
            "guidelines": self.guidelines,
            **extra,
        }
        return HTMLResponse(templates.get_template(template).render(**ctx), status_code=status)


def steward(request: Request) -> Session:
    """The signed-in steward (a dependency of every web and judge route)."""
    return Session(request)


def admin(request: Request) -> Session:
    """A signed-in admin."""
    return Session(request, admin=True)


StewardSession = Annotated[Session, Depends(steward)]  # a route's `s: StewardSession`
AdminSession = Annotated[Session, Depends(admin)]
