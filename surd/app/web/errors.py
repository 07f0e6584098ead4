"""Errors as each client reads them: the JSON API answers JSON; the web UI a page a person can read
(what went wrong, and a way back), never a raw JSON body."""

from __future__ import annotations

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from surd.app.web.session import templates

TITLES = {
    400: "That request could not be read",
    403: "Not allowed",
    404: "Not found",
    409: "Someone else got there first",
    410: "Gone",
    413: "Too large",
    422: "Something in the form is not right",
    429: "Too many attempts",
    503: "Busy",
}


def _page(request: Request, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    html = templates.get_template("error.html").render(
        user=None, status=status, title=TITLES.get(status, "Something went wrong"), message=message
    )
    return HTMLResponse(html, status_code=status, headers=headers)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    if 300 <= exc.status_code < 400 and "Location" in headers:  # a redirect (to /login)
        return RedirectResponse(headers["Location"], status_code=exc.status_code)
    if request.url.path.startswith("/api/"):
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers or None)
    return _page(request, exc.status_code, str(exc.detail), headers or None)


async def invalid(request: Request, exc: Exception) -> Response:
    """422 naming each bad field, without echoing the input (it may not even be JSON: 1e400)."""
    assert isinstance(exc, RequestValidationError)
    detail = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", ""))} for e in exc.errors()]
    if request.url.path.startswith("/api/"):
        return JSONResponse({"detail": detail}, status_code=422)
    said = "; ".join(f"{'.'.join(str(x) for x in d['loc'][1:]) or 'the form'}: {d['msg']}" for d in detail)
    return _page(request, 422, said)
