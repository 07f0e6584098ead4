"""The admin pages: stewards and their tokens, open leases, agreement (per guideline version),
stewards' comments and flags, bulk actions on a filtered set (each logged), takedowns, exports."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Form, HTTPException
from fastapi.responses import HTMLResponse, Response, StreamingResponse

from storage.layout import DataDir
from surd.app.web.session import AdminSession, Session
from surd.review import auth, bulk, comments, export, queries, queue, takedowns, throughput
from surd.review.filters import Filters

router = APIRouter(include_in_schema=False)


def _admin_page(
    s: Session,
    status: int = 200,
    flags_before: int | None = None,
    notes_before: int | None = None,
    **extra: Any,
) -> HTMLResponse:
    stewards = auth.list_stewards(s.engine)
    return s.render(
        "admin.html",
        status,
        flags=comments.page(s.engine, flags=True, before=flags_before),
        notes=comments.page(s.engine, flags=False, before=notes_before),
        actions=bulk.log(s.engine),
        agreement_by_version=queries.agreement_by_version(s.engine),
        bulk_actions=bulk.ACTIONS,
        stewards=stewards,
        tokens=auth.token_counts(s.engine),
        steward_names={x["name"] for x in stewards},
        roles=auth.ROLES,
        leases=queries.open_leases(s.engine),
        pace=throughput.by_steward(s.engine),
        agreement=queries.agreement(s.engine),
        takedowns=takedowns.entries(s.engine),
        takedown_kinds=takedowns.KINDS,
        **extra,
    )


@router.get("/admin", response_class=HTMLResponse)
def admin(s: AdminSession, flags_before: int | None = None, notes_before: int | None = None) -> Response:
    """The admin page; `flags_before` / `notes_before` page back through the flags and the comments."""
    return _admin_page(s, flags_before=flags_before, notes_before=notes_before)


@router.post("/admin/stewards", response_class=HTMLResponse)
def admin_add_steward(
    s: AdminSession,
    csrf: str = Form(...),
    name: str = Form(...),
    password: str = Form(...),
    role: str = Form(...),
) -> Response:
    s.check_csrf(csrf)
    try:
        auth.add_steward(s.engine, name.strip(), password, role)
    except ValueError as exc:  # a reserved or malformed name, a short password, an unknown role
        return _admin_page(s, message=str(exc), status=422)
    return _admin_page(s, message=f"Steward {name.strip()} saved.")


@router.post("/admin/tokens", response_class=HTMLResponse)
def admin_token(s: AdminSession, csrf: str = Form(...), name: str = Form(...)) -> Response:
    s.check_csrf(csrf)
    try:
        token = auth.new_token(s.engine, name)
    except ValueError as exc:  # no such steward
        return _admin_page(s, message=str(exc), status=422)
    return _admin_page(s, new_token={"steward": name, "token": token})


@router.post("/admin/stewards/remove", response_class=HTMLResponse)
def admin_remove_steward(s: AdminSession, csrf: str = Form(...), name: str = Form(...)) -> Response:
    s.check_csrf(csrf)
    if name == s.name:
        return _admin_page(s, message="You cannot remove your own account.")
    queue.release_leases(s.engine, steward=name)
    gone = auth.remove_steward(s.engine, name)
    return _admin_page(
        s, message=f"Steward {name} removed; their decisions stay." if gone else f"No steward {name}."
    )


@router.post("/admin/tokens/revoke", response_class=HTMLResponse)
def admin_revoke_tokens(s: AdminSession, csrf: str = Form(...), name: str = Form(...)) -> Response:
    s.check_csrf(csrf)
    return _admin_page(s, message=f"{auth.revoke_tokens(s.engine, name)} API token(s) of {name} revoked.")


@router.post("/admin/leases/release", response_class=HTMLResponse)
def admin_release(s: AdminSession, csrf: str = Form(...), steward: str = Form(...)) -> Response:
    s.check_csrf(csrf)
    n = queue.release_leases(s.engine, steward=steward)
    return _admin_page(s, message=f"{n} item(s) of {steward} returned to the queue.")


@router.post("/admin/takedowns", response_class=HTMLResponse)
def admin_takedown(
    s: AdminSession,
    csrf: str = Form(...),
    kind: str = Form(...),
    target: str = Form(...),
    reason: str = Form(""),
    requested_by: str = Form(""),
) -> Response:
    """Record a takedown (as `surd takedown add` does) and reject the queued items it covers."""
    from surd.stages import takedown  # the stages' rules: only when an admin takes content down

    s.check_csrf(csrf)
    try:
        entry = takedowns.add(s.engine, kind, target, reason, f"steward:{s.name}", requested_by or None)
    except ValueError as exc:
        return _admin_page(s, message=str(exc), status=422)
    n = takedown.enforce(s.settings, DataDir(s.settings.data_root))
    return _admin_page(s, message=f"Takedown {entry['id']} recorded; {n} queued item(s) rejected.")


@router.get("/admin/export")
def admin_export(s: AdminSession, what: str = "outcomes", format: str = "parquet") -> Response:
    if what not in queries.EXPORTS or format not in ("parquet", "jsonl"):
        raise HTTPException(422, f"what: {'|'.join(queries.EXPORTS)}, format: parquet|jsonl")
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


@router.post("/admin/bulk", response_class=HTMLResponse)
def admin_bulk(
    s: AdminSession,
    csrf: str = Form(...),
    action: str = Form(...),
    source: str = Form(""),
    margin_min: str = Form(""),
    margin_max: str = Form(""),
    text: str = Form(""),
    held_by: str = Form(""),
    to: str = Form(""),
) -> Response:
    """Release, reassign or reopen the items a filter selects, logged with the selection."""
    s.check_csrf(csrf)
    try:
        lo = float(margin_min) if margin_min.strip() else None
        hi = float(margin_max) if margin_max.strip() else None
    except ValueError:
        return _admin_page(s, message="The CLIP margin bounds must be numbers, like -0.2 or 0.5.", status=422)
    if to and auth.account(s.engine, to) is None:
        return _admin_page(s, message=f"No steward {to}: reassign to a steward with an account.", status=422)
    chosen = Filters(source or None, lo, hi, text=text.strip() or None)
    try:
        n = bulk.apply(
            s.engine,
            f"admin:{s.name}",
            action,
            chosen,
            held_by.strip() or None,
            to.strip() or None,
            s.settings.review.lease_seconds,
        )
    except ValueError as exc:
        return _admin_page(s, message=str(exc), status=422)
    return _admin_page(s, message=f"{action}: {n} item(s).")
