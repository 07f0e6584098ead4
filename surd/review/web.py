"""The steward UI: server-rendered pages, keyboard-first, every prompt escaped (Jinja autoescape).

Every page but /login needs a session; every POST carries the session's CSRF token; admin pages
need the admin role; login attempts are rate-limited per client address and per name.
"""

from __future__ import annotations

import io
import math
import secrets
import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from storage.layout import DataDir
from surd.review import auth, export, limiter, queries, queue, takedowns
from surd.review.text import clean_prompt
from surd.sources import SOURCES
from surd.sources.safety import LEVELS, level_name, parse_level

router = APIRouter(include_in_schema=False)
templates = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"), autoescape=select_autoescape(default=True)
)
templates.tests["web_url"] = lambda v: isinstance(v, str) and v.startswith(("https://", "http://"))


class Session:
    """The steward of a request, checked against the database on every request: a session lives
    only while its key is the account's (logout, a password reset, a role change and removal all
    change or drop the key, so every copy of the cookie ends at once)."""

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
            raise HTTPException(status_code=403, detail="bad CSRF token")

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
        )

    def render(self, template: str, status: int = 200, **extra: Any) -> HTMLResponse:
        ctx = {
            "user": self.name,
            "role": self.role,
            "csrf": self.csrf,
            "progress": queries.progress(self.engine),
            "filters": self.filters,
            "sources": SOURCES,
            "levels": LEVELS,
            "level_name": level_name,
            "blur_at": self.settings.review.blur_at,
            "blur_unlabelled": self.settings.review.blur_unlabelled,
            "blur_score": self.settings.review.blur_score,
            **extra,
        }
        return HTMLResponse(templates.get_template(template).render(**ctx), status_code=status)


def _login_page(request: Request, error: str | None, status: int, **headers: str) -> HTMLResponse:
    """The login form with a CSRF token of its own (kept in the pre-login session)."""
    token = request.session.get("login_csrf") or secrets.token_urlsafe(32)
    request.session["login_csrf"] = token
    page = templates.get_template("login.html").render(error=error, user=None, csrf=token)
    return HTMLResponse(page, status_code=status, headers=headers or None)


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request) -> HTMLResponse:
    return _login_page(request, None, 200)


@router.post("/login")
def login(
    request: Request, name: str = Form(...), password: str = Form(...), csrf: str = Form("")
) -> Response:
    expected = str(request.session.get("login_csrf", ""))
    if not expected or not secrets.compare_digest(csrf.encode(), expected.encode()):
        return _login_page(request, "The form expired; log in again.", 403)
    engine = request.app.state.engine
    address = request.client.host if request.client else "?"
    per_minute = request.app.state.settings.review.login_attempts_per_minute
    wait = limiter.reserve(engine, address, name, per_minute)  # counted before the slow hash
    if wait > 0:
        return _login_page(
            request,
            f"Too many attempts; wait {math.ceil(wait)} s.",
            429,
            **{"Retry-After": str(math.ceil(wait))},
        )
    role = auth.check(engine, name, password)
    key = auth.session_key(engine, name) if role is not None else None
    if role is None or key is None:  # the reservation stands as the failure
        return _login_page(request, "Wrong name or password.", 401)
    limiter.succeeded(engine, address, name)
    request.session.clear()
    request.session.update(user=name, key=key, csrf=secrets.token_urlsafe(32))
    return RedirectResponse("/", status_code=303)


@router.post("/logout")
def logout(request: Request, csrf: str = Form(...)) -> Response:
    s = Session(request)
    s.check_csrf(csrf)
    auth.end_sessions(s.engine, s.name)  # every copy of this account's session cookie ends
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


def _page(s: Session, sample_id: str, held: list[dict[str, Any]], previous: str | None) -> HTMLResponse:
    full = queries.item(s.engine, sample_id, s.name)
    if full is None:
        raise HTTPException(404)
    ids = [h["sample_id"] for h in held]
    at = ids.index(sample_id) if sample_id in ids else -1
    after = ids[at + 1 :] + ids[:at] if at >= 0 else ids
    return s.render(
        "review.html",
        item=full,
        mine=full.get("mine"),
        upcoming=after[: s.settings.review.prefetch],
        next_href=f"/?at={after[0]}" if after else None,
        previous=previous,
        held=len(ids),
        reasons=s.settings.review.reject_reasons,
    )


def _held(s: Session) -> list[dict[str, Any]]:
    return queue.claim(
        s.engine, s.name, s.settings.review.claim_batch, s.settings.review.lease_seconds, s.filters
    )


@router.get("/", response_class=HTMLResponse)
def review(request: Request, at: str | None = None) -> Response:
    s = Session(request)
    held = _held(s)
    previous = queries.last_decided(s.engine, s.name)
    if not held:
        return s.render("empty.html", previous=previous)
    current = at if at in {h["sample_id"] for h in held} else held[0]["sample_id"]
    return _page(s, str(current), held, previous)


@router.get("/item/{sample_id}", response_class=HTMLResponse)
def item_page(request: Request, sample_id: str) -> Response:
    """An item this steward decided (previous) or holds: shows their decision; deciding replaces it."""
    s = Session(request)
    got = queries.item(s.engine, sample_id, s.name)
    if got is None or (got["mine"] is None and got["lease_owner"] != s.name):
        raise HTTPException(404)
    before = got["mine"]["decision_id"] if got["mine"] else None
    return _page(s, sample_id, _held(s), queries.last_decided(s.engine, s.name, before_id=before))


@router.post("/decide")
def decide(
    request: Request,
    csrf: str = Form(...),
    sample_id: str = Form(...),
    decision: str = Form(...),
    reason: str = Form(""),
    simple_prompt: str = Form(""),
) -> Response:
    s = Session(request)
    s.check_csrf(csrf)
    if decision not in ("accept", "reject"):
        raise HTTPException(422, "decision must be accept or reject")
    if decision == "reject" and reason not in s.settings.review.reject_reasons:
        raise HTTPException(422, "unknown reject reason")
    try:
        edited = clean_prompt(simple_prompt) if decision == "accept" else None
    except ValueError as exc:  # the same rule and message as the API's
        raise HTTPException(422, str(exc)) from None
    try:
        queue.decide(
            s.engine,
            sample_id,
            s.name,
            decision,
            reason=reason if decision == "reject" else None,
            simple_prompt=edited if decision == "accept" else None,
        )
    except queue.QueueError as exc:
        raise HTTPException(409, str(exc)) from None
    return RedirectResponse("/", status_code=303)


@router.post("/undo")
def undo(request: Request, csrf: str = Form(...)) -> Response:
    s = Session(request)
    s.check_csrf(csrf)
    sid = queue.undo(s.engine, s.name, s.settings.review.lease_seconds)
    return RedirectResponse(f"/?at={sid}" if sid else "/", status_code=303)


def _float_or_none(v: str) -> float | None:
    v = v.strip()
    if not v:
        return None
    try:
        return float(v)
    except ValueError:
        raise HTTPException(422, f"not a number: {v[:20]!r}") from None


@router.post("/filters")
def set_filters(
    request: Request,
    csrf: str = Form(...),
    source: str = Form(""),
    margin_min: str = Form(""),
    margin_max: str = Form(""),
    nsfw_levels: str = Form(""),
    safety_max: str = Form(""),
) -> Response:
    s = Session(request)
    s.check_csrf(csrf)
    levels = [x.strip() for x in nsfw_levels.split(",") if x.strip()]
    try:
        most = parse_level(safety_max) if safety_max.strip() else None
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    request.session["filters"] = {
        "source": source or None,
        "margin_min": _float_or_none(margin_min),
        "margin_max": _float_or_none(margin_max),
        "nsfw_levels": levels or None,
        "safety_max": most,
    }
    queue.release_leases(s.engine, steward=s.name)  # what was held under the old filters goes back
    return RedirectResponse("/", status_code=303)


@router.get("/image/{sample_id}")
def image(request: Request, sample_id: str) -> Response:
    s = Session(request)
    if queries.item(s.engine, sample_id) is None:  # only what entered the review queue
        raise HTTPException(status_code=404)
    rows = DataDir(s.settings.data_root).table("images").lookup({sample_id}, ["image"])
    if sample_id not in rows or rows[sample_id]["image"] is None:
        raise HTTPException(status_code=404)
    ctype = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}[s.settings.images.encode_format]
    return Response(
        rows[sample_id]["image"], media_type=ctype, headers={"Cache-Control": "private, max-age=3600"}
    )


def _admin_page(s: Session, status: int = 200, **extra: Any) -> HTMLResponse:
    stewards = auth.list_stewards(s.engine)
    return s.render(
        "admin.html",
        status,
        stewards=stewards,
        tokens=auth.token_counts(s.engine),
        steward_names={x["name"] for x in stewards},
        roles=auth.ROLES,
        leases=queries.open_leases(s.engine),
        agreement=queries.agreement(s.engine),
        takedowns=takedowns.entries(s.engine),
        takedown_kinds=takedowns.KINDS,
        **extra,
    )


@router.get("/admin", response_class=HTMLResponse)
def admin(request: Request) -> Response:
    return _admin_page(Session(request, admin=True))


@router.post("/admin/stewards", response_class=HTMLResponse)
def admin_add_steward(
    request: Request,
    csrf: str = Form(...),
    name: str = Form(...),
    password: str = Form(...),
    role: str = Form(...),
) -> Response:
    s = Session(request, admin=True)
    s.check_csrf(csrf)
    try:
        auth.add_steward(s.engine, name.strip(), password, role)
    except ValueError as exc:
        return _admin_page(s, message=str(exc))
    return _admin_page(s, message=f"Steward {name.strip()} saved.")


@router.post("/admin/tokens", response_class=HTMLResponse)
def admin_token(request: Request, csrf: str = Form(...), name: str = Form(...)) -> Response:
    s = Session(request, admin=True)
    s.check_csrf(csrf)
    try:
        token = auth.new_token(s.engine, name)
    except ValueError as exc:  # no such steward
        return _admin_page(s, message=str(exc), status=422)
    return _admin_page(s, new_token={"steward": name, "token": token})


@router.post("/admin/stewards/remove", response_class=HTMLResponse)
def admin_remove_steward(request: Request, csrf: str = Form(...), name: str = Form(...)) -> Response:
    s = Session(request, admin=True)
    s.check_csrf(csrf)
    if name == s.name:
        return _admin_page(s, message="You cannot remove your own account.")
    queue.release_leases(s.engine, steward=name)
    gone = auth.remove_steward(s.engine, name)
    return _admin_page(
        s, message=f"Steward {name} removed; their decisions stay." if gone else f"No steward {name}."
    )


@router.post("/admin/tokens/revoke", response_class=HTMLResponse)
def admin_revoke_tokens(request: Request, csrf: str = Form(...), name: str = Form(...)) -> Response:
    s = Session(request, admin=True)
    s.check_csrf(csrf)
    return _admin_page(s, message=f"{auth.revoke_tokens(s.engine, name)} API token(s) of {name} revoked.")


@router.post("/admin/leases/release", response_class=HTMLResponse)
def admin_release(request: Request, csrf: str = Form(...), steward: str = Form(...)) -> Response:
    s = Session(request, admin=True)
    s.check_csrf(csrf)
    n = queue.release_leases(s.engine, steward=steward)
    return _admin_page(s, message=f"{n} item(s) of {steward} returned to the queue.")


@router.post("/admin/takedowns", response_class=HTMLResponse)
def admin_takedown(
    request: Request,
    csrf: str = Form(...),
    kind: str = Form(...),
    target: str = Form(...),
    reason: str = Form(""),
    requested_by: str = Form(""),
) -> Response:
    """Record a takedown (as `surd takedown add` does) and reject the queued items it covers."""
    from surd.stages import takedown  # the stages' rules: only when an admin takes content down

    s = Session(request, admin=True)
    s.check_csrf(csrf)
    try:
        entry = takedowns.add(s.engine, kind, target, reason, f"steward:{s.name}", requested_by or None)
    except ValueError as exc:
        return _admin_page(s, message=str(exc), status=422)
    n = takedown.enforce(s.settings, DataDir(s.settings.data_root))
    return _admin_page(s, message=f"Takedown {entry['id']} recorded; {n} queued item(s) rejected.")


@router.get("/admin/export")
def admin_export(request: Request, what: str = "outcomes", format: str = "parquet") -> Response:
    s = Session(request, admin=True)
    if what not in ("outcomes", "audit") or format not in ("parquet", "jsonl"):
        raise HTTPException(422, "what: outcomes|audit, format: parquet|jsonl")
    rows = queries.export_rows(s.engine, what)
    name = f"surd-review-{what}.{format}"
    headers = {"Content-Disposition": f'attachment; filename="{name}"'}
    if format == "jsonl":
        return StreamingResponse(
            export.jsonl_chunks(rows), media_type="application/x-ndjson", headers=headers
        )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        export.write_parquet(rows, path)
        data = io.BytesIO(path.read_bytes())
    return StreamingResponse(data, media_type="application/vnd.apache.parquet", headers=headers)
