"""The JSON API beside the UI: bearer tokens, described by its OpenAPI schema at /api/openapi.json."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from surd.review import auth, comments, guidelines, queries, queue, throughput
from surd.review.export import jsonl_chunks
from surd.review.filters import SORTS
from surd.review.text import MAX_PROMPT, clean_prompt

router = APIRouter(prefix="/api", tags=["review"])
_bearer = HTTPBearer(auto_error=False)


class Caller(BaseModel):
    name: str
    role: str


def caller(request: Request, cred: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> Caller:
    if cred is None or cred.scheme.lower() != "bearer":
        raise HTTPException(401, "a bearer token is required", headers={"WWW-Authenticate": "Bearer"})
    found = auth.check_token(request.app.state.engine, cred.credentials)
    if found is None:
        raise HTTPException(401, "unknown token", headers={"WWW-Authenticate": "Bearer"})
    return Caller(name=found[0], role=found[1])


def admin(who: Caller = Depends(caller)) -> Caller:
    if who.role != "admin":
        raise HTTPException(403, "admins only")
    return who


class ClaimRequest(BaseModel):
    n: int = Field(10, ge=1, le=200, description="items to lease")
    source: str | None = None
    margin_min: float | None = None
    margin_max: float | None = None
    nsfw_levels: list[str] | None = None
    safety_max: int | None = Field(
        None, ge=0, le=3, description="at most this NSFW level (0 safe … 3 explicit)"
    )
    text: str | None = Field(None, max_length=200, description="text in either prompt (any case)")
    sort: str = Field("queue", description=f"the queue's order or one of: {', '.join(list(SORTS)[1:])}")
    single_only: bool = Field(False, description="leave out audit items (they need independent decisions)")


class ClaimResponse(BaseModel):
    items: list[dict[str, Any]]
    lease_seconds: int


class DecideRequest(BaseModel):
    sample_id: str
    decision: Literal["accept", "reject"]
    reason: str | None = None
    simple_prompt: str | None = Field(
        None,
        description=f"an edited simple prompt (accept): at most {MAX_PROMPT} characters, no controls",
    )


class DecideResponse(BaseModel):
    decision_id: int
    state: str


class UndoResponse(BaseModel):
    sample_id: str | None


@router.post("/claim", response_model=ClaimResponse)
def claim(body: ClaimRequest, request: Request, who: Caller = Depends(caller)) -> ClaimResponse:
    s = request.app.state.settings
    filters = queue.Filters(
        body.source,
        body.margin_min,
        body.margin_max,
        tuple(body.nsfw_levels) if body.nsfw_levels else None,
        body.safety_max,
        text=body.text or None,
        sort=body.sort,
        single_only=body.single_only,
    )
    if body.sort not in SORTS:
        raise HTTPException(422, f"sort by one of {', '.join(SORTS)}")
    review = s.review
    got = queue.claim(
        request.app.state.engine, who.name, body.n, review.lease_seconds, filters, max_held=review.max_held
    )
    return ClaimResponse(items=got, lease_seconds=s.review.lease_seconds)


@router.post("/decide", response_model=DecideResponse)
def decide(body: DecideRequest, request: Request, who: Caller = Depends(caller)) -> DecideResponse:
    s = request.app.state.settings
    if body.decision == "reject" and body.reason not in s.review.reject_reasons:
        raise HTTPException(422, f"reason must be one of {', '.join(s.review.reject_reasons)}")
    engine = request.app.state.engine
    try:
        edited = clean_prompt(body.simple_prompt) if body.decision == "accept" else None
    except ValueError as exc:  # the same rule and message as the web form's
        raise HTTPException(422, str(exc)) from None
    try:
        did = queue.decide(
            engine,
            body.sample_id,
            who.name,
            body.decision,
            reason=body.reason if body.decision == "reject" else None,
            simple_prompt=edited,
            view="api",
            guideline_version=guidelines.version(s.review.guidelines),
        )
    except queue.QueueError as exc:
        raise HTTPException(409, str(exc)) from None
    got = queries.item(engine, body.sample_id)
    return DecideResponse(decision_id=did, state=got["state"] if got else "unknown")


@router.get("/guidelines")
def guidelines_(request: Request, who: Caller = Depends(caller)) -> dict[str, Any]:
    """The reviewing guidelines in force (Markdown) and their version, which decisions record."""
    g = guidelines.load(request.app.state.settings.review.guidelines)
    return {"version": g.version, "markdown": g.markdown} if g else {"version": None, "markdown": None}


class SkipRequest(BaseModel):
    sample_id: str


@router.post("/skip")
def skip(body: SkipRequest, request: Request, who: Caller = Depends(caller)) -> dict[str, Any]:
    """Pass on an item: this caller's lease on it ends at once, for another steward to take."""
    return {"released": queue.skip(request.app.state.engine, who.name, body.sample_id)}


class CommentRequest(BaseModel):
    sample_id: str
    text: str = Field("", max_length=comments.MAX_TEXT)
    flag: bool = False


@router.post("/comment")
def comment(body: CommentRequest, request: Request, who: Caller = Depends(caller)) -> dict[str, Any]:
    """A note on an item for the admins (`flag`: asks them to look)."""
    try:
        review = request.app.state.settings.review
        cid = comments.add(
            request.app.state.engine,
            body.sample_id,
            who.name,
            body.text,
            body.flag,
            per_item=review.comments_per_item,
            per_minute=review.comments_per_minute,
        )
    except ValueError as exc:
        raise HTTPException(429 if isinstance(exc, comments.TooMany) else 422, str(exc)) from None
    return {"id": cid}


@router.post("/undo", response_model=UndoResponse)
def undo(request: Request, who: Caller = Depends(caller)) -> UndoResponse:
    s = request.app.state.settings
    return UndoResponse(sample_id=queue.undo(request.app.state.engine, who.name, s.review.lease_seconds))


@router.get("/progress")
def progress(request: Request, who: Caller = Depends(caller)) -> dict[str, Any]:
    engine = request.app.state.engine
    return {**queries.progress(engine), "agreement": queries.agreement(engine)}


@router.get("/throughput")
def pace(request: Request, who: Caller = Depends(admin)) -> list[dict[str, Any]]:
    """Per steward and view: decisions, decisions an hour, seconds a decision (median, p90)."""
    return throughput.by_steward(request.app.state.engine)


@router.get("/export", response_class=StreamingResponse)
def export(
    request: Request, what: Literal["outcomes", "audit", "reveals"] = "outcomes", who: Caller = Depends(admin)
) -> StreamingResponse:
    """Every item's outcome, the whole decision log, or the reveal log, as JSON lines (streamed)."""
    rows = queries.export_rows(request.app.state.engine, what)
    return StreamingResponse(jsonl_chunks(rows), media_type="application/x-ndjson")


@router.get("/openapi.json", include_in_schema=False)
def openapi(request: Request, who: Caller = Depends(caller)) -> dict[str, Any]:
    return request.app.openapi()
