"""Makes docs/review.png: the review page over the demo's data, in Debian's Chromium.

make demo && .venv/bin/python docs/review_screenshot.py [data/demo]
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from playwright.sync_api import sync_playwright  # noqa: E402

from surd.app.web.app import create_app  # noqa: E402
from surd.config import load_settings  # noqa: E402
from surd.review import auth, queue  # noqa: E402
from tests.conftest import free_port  # noqa: E402
from tests.serve import ThreadedServer  # noqa: E402


def main(data_root: str = "data/demo") -> None:
    settings = load_settings(data_root=data_root)
    engine = queue.connect(settings.review_database_url)
    password = secrets.token_urlsafe(12)
    auth.add_steward(engine, "screenshot", password)
    with ThreadedServer(create_app(settings), free_port()) as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 860})
        page.goto(server.url + "/login")
        page.fill("#name", "screenshot")
        page.fill("#password", password)
        page.click("#login")
        for _ in range(100):  # the page's CSP forbids eval, so poll instead of wait_for_function
            if page.evaluate("document.getElementById('image').naturalWidth") > 0:
                break
            page.wait_for_timeout(100)
        page.screenshot(path=str(ROOT / "docs" / "review.png"))
        browser.close()
    queue.release_leases(engine, steward="screenshot")
    print(ROOT / "docs" / "review.png")


if __name__ == "__main__":
    main(*sys.argv[1:])
