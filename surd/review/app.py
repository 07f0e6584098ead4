"""The review web app: server-rendered pages, keyboard-first, every prompt escaped.

Sessions are signed HTTP-only cookies; every state-changing request carries the session's CSRF
token; login attempts are rate-limited per client address.
"""

from __future__ import annotations

import secrets
import time
from collections import defaultdict, deque

from fastapi import FastAPI, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment
from starlette.middleware.sessions import SessionMiddleware

from surd.review import auth, queue
from surd.settings import Settings

_env = Environment(autoescape=True)
LOGIN = _env.from_string("""<!doctype html><title>SURD review: log in</title>
<h1>SURD review</h1>{% if error %}<p role=alert>{{ error }}</p>{% endif %}
<form method=post action=/login><label>Steward <input name=name autofocus></label>
<label>Password <input name=password type=password></label><button>Log in</button></form>""")
PAGE = _env.from_string("""<!doctype html><title>SURD review</title>
<style>body{font-family:sans-serif;display:flex;gap:2em}img{width:512px;height:512px}
.p{max-width:40em;white-space:pre-wrap;border:1px solid #ccc;padding:.5em}kbd{border:1px solid #999;padding:0 .3em}</style>
<div><img src="/image/{{ item.sample_id }}" alt="sample image"></div><div>
<p>Logged in as {{ user }} · decided by you: {{ mine }} · remaining: {{ remaining }}</p>
<h2>Simple prompt (BLIP)</h2><div class=p id=simple>{{ item.simple_prompt }}</div>
<h2>Complex prompt ({{ item.source }})</h2><div class=p id=complex>{{ item.complex_prompt }}</div>
<h3>Negative prompt</h3><div class=p>{{ item.negative_prompt or "" }}</div>
<p>CLIP: p(simple)={{ "%.3f"|format(item.p_simple) }} p(complex)={{ "%.3f"|format(item.p_complex) }}
· <a href="{{ item.source_url }}" rel="noreferrer noopener">source</a></p>
<form method=post action=/decide id=f><input type=hidden name=csrf value="{{ csrf }}">
<input type=hidden name=sample_id value="{{ item.sample_id }}">
<label>Edit simple prompt <input name=simple_prompt id=edit size=60></label>
<select name=reason id=reason>{% for r in reasons %}<option>{{ r }}</option>{% endfor %}</select>
<button name=decision value=accept id=accept>Accept <kbd>a</kbd></button>
<button name=decision value=reject id=reject>Reject <kbd>r</kbd></button></form>
<p>Keys: <kbd>a</kbd> accept · <kbd>r</kbd> reject with the chosen reason · <kbd>e</kbd> edit the simple prompt, then Enter accepts it</p>
</div><script>
document.addEventListener('keydown', e => {
  if (e.target.tagName === 'INPUT' || e.target.tagName === 'SELECT') return;
  if (e.key === 'a') document.getElementById('accept').click();
  if (e.key === 'r') document.getElementById('reject').click();
  if (e.key === 'e') { e.preventDefault(); document.getElementById('edit').focus(); }
});
document.getElementById('edit').addEventListener('keydown', e => {
  if (e.key === 'Enter') { e.preventDefault(); document.getElementById('accept').click(); }
});
</script>""")
EMPTY = _env.from_string(
    "<!doctype html><title>SURD review</title><p>Nothing left to review, {{ user }}.</p>"
)


def create_app(settings: Settings) -> FastAPI:
    engine = queue.connect(settings.review_database_url)
    app = FastAPI(title="SURD review", docs_url=None, redoc_url=None)
    secret = (
        settings.review.session_secret.get_secret_value()
        if settings.review.session_secret
        else secrets.token_hex(32)
    )
    app.add_middleware(SessionMiddleware, secret_key=secret, https_only=False, same_site="strict")
    attempts: dict[str, deque[float]] = defaultdict(deque)

    def user(request: Request) -> str:
        name = request.session.get("user")
        if not name:
            raise HTTPException(status_code=303, headers={"Location": "/login"})
        return str(name)

    @app.get("/login", response_class=HTMLResponse)
    def login_form() -> str:
        return LOGIN.render(error=None)

    @app.post("/login")
    def login(request: Request, name: str = Form(...), password: str = Form(...)) -> Response:
        ip = request.client.host if request.client else "?"
        window = attempts[ip]
        now = time.monotonic()
        while window and now - window[0] > 60:
            window.popleft()
        if len(window) >= 10:
            return HTMLResponse(LOGIN.render(error="Too many attempts; wait a minute."), status_code=429)
        window.append(now)
        role = auth.check(engine, name, password)
        if role is None:
            return HTMLResponse(LOGIN.render(error="Wrong name or password."), status_code=401)
        request.session.update(user=name, role=role, csrf=secrets.token_urlsafe(32))
        return RedirectResponse("/", status_code=303)

    @app.get("/", response_class=HTMLResponse)
    def next_item(request: Request) -> str:
        name = user(request)
        got = queue.claim(engine, name, 1, settings.review.lease_seconds)
        standing = queue.effective(engine)
        mine = sum(1 for d in standing.values() if d["actor"] == name)
        remaining = len(queue.queued_ids(engine)) - len(standing)
        if not got:
            return EMPTY.render(user=name)
        return PAGE.render(
            item=got[0],
            user=name,
            csrf=request.session["csrf"],
            mine=mine,
            remaining=remaining,
            reasons=settings.review.reject_reasons,
        )

    @app.post("/decide")
    def decide(
        request: Request,
        csrf: str = Form(...),
        sample_id: str = Form(...),
        decision: str = Form(...),
        reason: str = Form(""),
        simple_prompt: str = Form(""),
    ) -> Response:
        name = user(request)
        if not secrets.compare_digest(csrf, str(request.session.get("csrf", ""))):
            raise HTTPException(status_code=403, detail="bad CSRF token")
        if decision == "reject" and reason not in settings.review.reject_reasons:
            raise HTTPException(status_code=422, detail="unknown reject reason")
        queue.decide(
            engine,
            sample_id,
            name,
            decision,
            reason=reason if decision == "reject" else None,
            simple_prompt=simple_prompt.strip() or None if decision == "accept" else None,
        )
        return RedirectResponse("/", status_code=303)

    @app.get("/image/{sample_id}")
    def image(request: Request, sample_id: str) -> Response:
        user(request)
        from storage.layout import DataDir
        from surd.stage import lookup

        rows = lookup(DataDir(settings.data_root).table("images"), {sample_id}, ["image"])
        if sample_id not in rows or rows[sample_id]["image"] is None:
            raise HTTPException(status_code=404)
        ctype = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}[
            settings.images.encode_format
        ]
        return Response(
            rows[sample_id]["image"],
            media_type=ctype,
            headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=3600"},
        )

    @app.post("/logout")
    def logout(request: Request) -> Response:
        request.session.clear()
        return RedirectResponse("/login", status_code=303)

    return app
