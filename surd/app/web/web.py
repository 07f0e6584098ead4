"""The steward UI's single view: server-rendered pages, keyboard-first, every prompt escaped (Jinja
autoescape). Every page but /login needs a session (surd.app.web.session, as a dependency); every
POST carries the session's CSRF token; login attempts are rate-limited per client address and per
name. The grid (grid.py), the images (images.py) and the admin pages (admin.py) have their own."""

from __future__ import annotations

import math
import secrets
from typing import Any

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from surd.app.web.session import Session, StewardSession, templates
from surd.review import auth, comments, limiter, queries, queue
from surd.review.filters import SORTS
from surd.review.shield import flagged
from surd.review.text import clean_prompt
from surd.sources.safety import parse_level

router = APIRouter(include_in_schema=False)


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


def _notes(s: Session, full: dict[str, Any]) -> list[dict[str, Any]]:
    """The item's comments, but on an audit item not yet decided by this steward only their own:
    the second decider sees nothing of the first's note or name before deciding (blind)."""
    notes = comments.of(s.engine, [full["sample_id"]]).get(full["sample_id"], [])
    if full.get("needed", 1) > 1 and full.get("mine") is None:
        notes = [n for n in notes if n["author"] == s.name]
    return notes


def _page(s: Session, sample_id: str, held: list[dict[str, Any]], previous: str | None) -> HTMLResponse:
    full = queries.item(s.engine, sample_id, s.name)
    if full is None:
        raise HTTPException(404, f"no item {sample_id} in the queue")
    ids = [h["sample_id"] for h in held]
    at = ids.index(sample_id) if sample_id in ids else -1
    after = ids[at + 1 :] + ids[:at] if at >= 0 else ids
    return s.render(
        "review.html",
        item=full,
        mine=full.get("mine"),
        veiled=flagged(full, s.settings.review) and sample_id not in s.remembered("revealed"),
        notes=_notes(s, full),
        upcoming=after[: s.settings.review.prefetch],
        next_href=f"/?at={after[0]}" if after else None,
        previous=previous,
        held=len(ids),
        reasons=s.settings.review.reject_reasons,
    )


def _held(s: Session) -> list[dict[str, Any]]:
    return queue.claim(
        s.engine,
        s.name,
        s.settings.review.claim_batch,
        s.settings.review.lease_seconds,
        s.filters,
        max_held=s.settings.review.max_held,
    )


@router.get("/", response_class=HTMLResponse)
def review(s: StewardSession, at: str | None = None) -> Response:
    held = _held(s)
    previous = queries.last_decided(s.engine, s.name)
    if not held:
        return s.render("empty.html", previous=previous)
    current = at if at in {h["sample_id"] for h in held} else held[0]["sample_id"]
    return _page(s, str(current), held, previous)


@router.get("/item/{sample_id}", response_class=HTMLResponse)
def item_page(sample_id: str, s: StewardSession) -> Response:
    """An item this steward decided (previous) or holds: shows their decision; deciding replaces it."""
    got = queries.item(s.engine, sample_id, s.name)
    if got is None or (got["mine"] is None and got["lease_owner"] != s.name):
        raise HTTPException(404, f"item {sample_id} is not yours to see: you neither hold nor decided it")
    before = got["mine"]["decision_id"] if got["mine"] else None
    return _page(s, sample_id, _held(s), queries.last_decided(s.engine, s.name, before_id=before))


@router.post("/decide")
def decide(
    s: StewardSession,
    csrf: str = Form(...),
    sample_id: str = Form(...),
    decision: str = Form(...),
    reason: str = Form(""),
    simple_prompt: str = Form(""),
) -> Response:
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
            view="single",
            guideline_version=s.guideline_version,
        )
    except queue.QueueError as exc:
        raise HTTPException(409, str(exc)) from None
    return RedirectResponse("/", status_code=303)


@router.post("/undo")
def undo(s: StewardSession, csrf: str = Form(...)) -> Response:
    s.check_csrf(csrf)
    sid = queue.undo(s.engine, s.name, s.settings.review.lease_seconds)
    return RedirectResponse(f"/?at={sid}" if sid else "/", status_code=303)


@router.post("/skip")
def skip(s: StewardSession, csrf: str = Form(...), sample_id: str = Form(...)) -> Response:
    """Pass on an item: its lease ends at once (another steward may take it); this steward's own
    claims leave it out for the rest of the session."""
    s.check_csrf(csrf)
    queue.skip(s.engine, s.name, sample_id)
    s.remember("skipped", sample_id)
    return RedirectResponse("/", status_code=303)


@router.post("/comment")
def comment(
    s: StewardSession,
    csrf: str = Form(...),
    sample_id: str = Form(...),
    text: str = Form(""),
    flag: str = Form(""),
) -> Response:
    """A note on an item for the admins (a flag asks them to look)."""
    s.check_csrf(csrf)
    try:
        review = s.settings.review
        comments.add(
            s.engine,
            sample_id,
            s.name,
            text,
            flag=bool(flag),
            per_item=review.comments_per_item,
            per_minute=review.comments_per_minute,
        )
    except ValueError as exc:
        raise HTTPException(429 if isinstance(exc, comments.TooMany) else 422, str(exc)) from None
    return RedirectResponse(f"/?at={sample_id}", status_code=303)


@router.get("/guidelines", response_class=HTMLResponse)
def guidelines_page(s: StewardSession) -> Response:
    return s.render("guidelines.html")


def _float_or_none(v: str, what: str) -> float | None:
    v = v.strip()
    if not v:
        return None
    try:
        return float(v)
    except ValueError:
        raise HTTPException(422, f"{what} must be a number, like 0.2 or -0.5; got {v[:20]!r}") from None


@router.post("/filters")
def set_filters(
    s: StewardSession,
    csrf: str = Form(...),
    source: str = Form(""),
    margin_min: str = Form(""),
    margin_max: str = Form(""),
    nsfw_levels: str = Form(""),
    safety_max: str = Form(""),
    text: str = Form(""),
    sort: str = Form("queue"),
    back: str = Form("/"),
) -> Response:
    s.check_csrf(csrf)
    levels = [x.strip() for x in nsfw_levels.split(",") if x.strip()]
    try:
        most = parse_level(safety_max) if safety_max.strip() else None
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    if sort not in SORTS:
        raise HTTPException(422, f"sort by one of {', '.join(SORTS)}")
    s.request.session["filters"] = {
        "source": source or None,
        "margin_min": _float_or_none(margin_min, "the CLIP margin's lower end"),
        "margin_max": _float_or_none(margin_max, "the CLIP margin's upper end"),
        "nsfw_levels": levels or None,
        "safety_max": most,
        "text": text.strip()[:200] or None,
        "sort": sort,
    }
    queue.release_leases(s.engine, steward=s.name)  # what was held under the old filters goes back
    return RedirectResponse("/grid" if back == "/grid" else "/", status_code=303)
