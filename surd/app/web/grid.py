"""The grid view, for the common case: a page of thumbnails (`review.grid_size`), each with its
simple prompt and CLIP margin, worked with the keyboard (arrows or h/j/k/l move, `x` marks or
unmarks a reject with the chosen reason, `1`–`9` choose it, `Enter` submits the page: the unmarked
ones are accepted). One request a page, one transaction; each decision is still its own row of the
log, with the steward, the time, the view (`grid`) and the guideline version. Audit items are
never shown here: they need independent decisions, made one at a time in the single view."""

from __future__ import annotations

from fastapi import APIRouter, Form, HTTPException
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from surd.app.web.session import Session, StewardSession
from surd.review import queue
from surd.review.filters import Filters
from surd.review.shield import flagged

router = APIRouter(include_in_schema=False)


def _page_filters(s: Session) -> Filters:
    f = s.filters
    return Filters(**{**vars(f), "single_only": True})


@router.get("/grid", response_class=HTMLResponse)
def grid(s: StewardSession) -> Response:
    review = s.settings.review
    queue.release_leases(s.engine, steward=s.name)  # a page is claimed whole, from the queue's front
    held = queue.claim(
        s.engine, s.name, review.grid_size, review.lease_seconds, _page_filters(s), max_held=review.max_held
    )
    if not held:
        return s.render("empty.html", previous=None)
    revealed = set(s.remembered("revealed"))
    cells = [{**h, "veiled": flagged(h, review) and h["sample_id"] not in revealed} for h in held]
    return s.render("grid.html", cells=cells, reasons=review.reject_reasons)


@router.post("/grid/decide")
def decide_page(
    s: StewardSession,
    csrf: str = Form(...),
    sample_id: list[str] = Form(...),
    verdict: list[str] = Form(...),
) -> Response:
    """Each item of the page as marked: `accept`, or a reject reason. All of them in one
    transaction: a page is recorded whole or not at all."""
    s.check_csrf(csrf)
    reasons = s.settings.review.reject_reasons
    if len(sample_id) != len(verdict) or len(set(sample_id)) != len(sample_id):
        raise HTTPException(422, "a page names each item once, each with its verdict")
    if any(v != "accept" and v not in reasons for v in verdict):
        raise HTTPException(422, f"a verdict is accept or one of the reasons: {', '.join(reasons)}")
    decided = [
        {
            "sample_id": sid,
            "actor": s.name,
            "decision": "accept" if v == "accept" else "reject",
            "reason": None if v == "accept" else v,
            "view": "grid",
            "guideline_version": s.guideline_version,
        }
        for sid, v in zip(sample_id, verdict, strict=True)
    ]
    try:
        queue.decide_page(s.engine, s.name, decided)
    except queue.QueueError as exc:
        raise HTTPException(409, f"{exc}; nothing on this page was recorded: reload it") from None
    return RedirectResponse("/grid", status_code=303)
