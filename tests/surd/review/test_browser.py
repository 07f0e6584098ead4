"""A steward's session in a real browser: Debian's Chromium driven by Playwright, keyboard only."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from PIL import Image

from storage.schemas import OK
from surd import chain
from surd.app.web.app import create_app
from surd.config import load_settings
from surd.review import auth, outcome, queries, queue, reveals, shield, takedowns
from tests.conftest import free_port
from tests.serve import ThreadedServer

pytestmark = pytest.mark.slow  # subprocesses, servers or a browser: not in `make test-fast`

CHROMIUM = "/usr/bin/chromium"
XSS = "<script>window.pwned=1;alert('xss')</script><img src=x onerror=\"window.pwned=2\"> a castle"


def seed_review(
    root: Path,
    n: int = 4,
    labels: dict[int, str] | None = None,
    scores: dict[int, float] | None = None,
    detector: dict[int, float] | None = None,
    audit: set[int] | None = None,
):
    """A data root with n queued items and their images; s1's complex prompt is an XSS payload.
    `labels`: the source's NSFW label of some items (else Civitai's browsing level 1, PG);
    `scores`: CLIP's zero-shot NSFW score, `detector`: the trained detector's; `audit`: the items
    that need two independent decisions."""
    data = chain.PIPELINE.data_dir(root).open()
    settings = load_settings(data_root=root)
    engine = queue.connect(settings.review_database_url)
    auth.add_steward(engine, "alice", "correct horse")
    rows, images = [], []
    for i in range(1, n + 1):
        rows.append(
            {
                "sample_id": f"s{i}",
                "simple_prompt": f"a photo of thing {i}",
                "complex_prompt": XSS if i == 1 else f"thing {i}, ultra detailed, 8k, trending on artstation",
                "negative_prompt": "blurry",
                "p_simple": 0.6,
                "p_complex": 0.4,
                "source": "civitai",
                "source_url": f"https://civitai.com/images/{i}",
                "nsfw_level": (labels or {}).get(i, 1),
                **({"nsfw_score": scores[i]} if i in (scores or {}) else {}),
                **({"nsfw_detector": detector[i]} if i in (detector or {}) else {}),
            }
        )
        buf = io.BytesIO()
        Image.new("RGB", (512, 512), (40 * i, 120, 200 - 30 * i)).save(buf, "JPEG")
        row = dict.fromkeys(data.table("images").schema.names)
        row.update(sample_id=f"s{i}", status=OK, image=buf.getvalue())
        images.append(row)
    audited = {f"s{i}" for i in audit or ()}
    queue.enqueue(engine, [r for r in rows if r["sample_id"] not in audited])
    queue.enqueue(engine, [r for r in rows if r["sample_id"] in audited], audit_share=1.0)
    data.table("images").write(images)
    return settings, engine


def stored_image(root: Path, sample_id: str) -> bytes:
    return chain.PIPELINE.data_dir(root).table("images").lookup({sample_id}, ["image"])[sample_id]["image"]


def until(page, expression: str, seconds: float = 10.0) -> None:
    """Wait for a page expression to hold (the page's CSP forbids wait_for_function's eval)."""
    import time

    deadline = time.monotonic() + seconds
    while not page.evaluate(f"() => Boolean({expression})"):
        assert time.monotonic() < deadline, f"still false after {seconds} s: {expression}"
        page.wait_for_timeout(50)


def with_review(settings, **review):
    return settings.model_copy(update={"review": settings.review.model_copy(update=review)})


def signed_in(browser, url: str, name: str = "alice", password: str = "correct horse"):
    """A new page in a browser context of its own (its own cookies), signed in (the
    keyboard-only test types it all itself)."""
    page = browser.new_context().new_page()
    page.goto(url + "/login")
    page.fill("#name", name)
    page.fill("#password", password)
    with page.expect_navigation():
        page.keyboard.press("Enter")
    return page


@pytest.fixture
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: apt-get install -y chromium (.ci/run does this)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--disable-sync",
            ],
        )
        yield b
        b.close()


def test_a_steward_reviews_a_batch_with_the_keyboard_only(tmp_path: Path, browser) -> None:
    settings, engine = seed_review(tmp_path)
    with ThreadedServer(create_app(settings), free_port()) as server:
        page = browser.new_page()
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(server.url + "/")
        assert page.url.endswith("/login")
        page.locator("#name").focus()  # what `autofocus` does, without racing the page load
        page.keyboard.type("alice")
        page.keyboard.press("Tab")
        page.keyboard.type("correct horse")
        with page.expect_navigation():
            page.keyboard.press("Enter")

        # the XSS payload is shown as text, and nothing of it ran
        assert page.text_content("#complex") == XSS
        assert page.evaluate("window.pwned") is None and dialogs == []
        assert page.evaluate("document.getElementById('image').naturalWidth") == 512
        assert page.locator('link[rel="preload"][as="image"]').count() == 3
        assert "mine 0" in page.text_content("#progress") and "remaining 4 of 4" in page.text_content(
            "#progress"
        )

        with page.expect_navigation():
            page.keyboard.press("a")  # accept s1
        assert page.text_content("#simple") == "a photo of thing 2"
        assert "mine 1" in page.text_content("#progress")
        with page.expect_navigation():
            page.keyboard.press("3")  # reject s2: reason 3
        with page.expect_navigation():
            page.keyboard.press("e")
            page.keyboard.press("Control+a")
            page.keyboard.type("a red fox")
            page.keyboard.press("Enter")  # accept s3 with the edited prompt
        assert "mine 3" in page.text_content("#progress") and "remaining 1 of 4" in page.text_content(
            "#progress"
        )
        with page.expect_navigation():
            page.keyboard.press("u")  # undo: s3 comes back
        assert page.text_content("#simple") == "a photo of thing 3"
        assert "mine 2" in page.text_content("#progress")
        with page.expect_navigation():
            page.keyboard.press("p")  # previous: my decision on s2
        assert "reject" in page.text_content("#mine") and "low_quality" in page.text_content("#mine")
        with page.expect_navigation():
            page.keyboard.press("n")  # back to the queue
        assert re.search(r"thing [34]$", page.text_content("#simple"))
        page.set_viewport_size({"width": 1400, "height": 900})
        page.screenshot(path=str(tmp_path / "review.png"))

    standing = outcome.effective(engine)
    assert standing["s1"]["decision"] == "accept" and standing["s1"]["simple_prompt"] is None
    assert standing["s2"]["decision"] == "reject" and standing["s2"]["reason"] == "low_quality"
    assert "s3" not in standing and "s4" not in standing
    audit = list(queries.export_rows(engine, "audit"))
    assert [a["decision"] for a in audit] == ["accept", "reject", "accept", "undo"]
    assert audit[2]["simple_prompt"] == "a red fox" and audit[3]["previous_prompt"] == "a red fox"
    assert (tmp_path / "review.png").stat().st_size > 10_000


def test_a_flagged_image_is_blurred_by_the_server_until_the_steward_reveals_it(
    tmp_path: Path, browser
) -> None:
    """No unblurred byte of a flagged image leaves the server before the reveal (not the page's
    image, not its preload, not a thumbnail), and none is cached; after `v`, the stored bytes,
    still `no-store`."""
    settings, engine = seed_review(
        tmp_path, n=4, labels={1: "X", 3: "Soft"}, scores={2: 0.2, 3: 0.9}, detector={2: 0.1, 4: 0.7}
    )
    settings = with_review(settings, blur_score=0.8)
    veiled = {sid: shield.veiled(stored_image(tmp_path, sid), 512) for sid in ("s1", "s3", "s4")}
    with ThreadedServer(create_app(settings), free_port()) as server:
        page = signed_in(browser, server.url)
        sent: dict[str, list[tuple[bytes, str]]] = {}  # every image response the browser got

        def record(route) -> None:
            r = route.fetch()
            sid = route.request.url.split("/image/")[1].split("?")[0]
            sent.setdefault(sid, []).append((r.body(), r.headers.get("cache-control", "")))
            route.fulfill(response=r)

        page.route("**/image/**", record)
        page.reload()
        assert page.text_content("#simple") == "a photo of thing 1"
        assert page.text_content("#safety").startswith("Safety: explicit (source label X)")
        until(page, "document.getElementById('image').complete")

        def fetched(sid: str) -> tuple[bytes, str]:
            r = page.request.get(f"{server.url}/image/{sid}")
            return r.body(), r.headers["cache-control"]

        assert fetched("s1") == (veiled["s1"], "no-store")  # the server's blurred rendering
        assert veiled["s1"] != stored_image(tmp_path, "s1")
        thumb = page.request.get(f"{server.url}/thumb/s1")
        assert thumb.body() == shield.veiled(stored_image(tmp_path, "s1"), shield.THUMB)
        page.keyboard.press("v")
        until(page, "document.getElementById('image').dataset.shown === '1'")
        assert "press v to blur" in page.text_content("#veil-note")
        assert fetched("s1") == (stored_image(tmp_path, "s1"), "no-store")  # revealed: never cached
        page.keyboard.press("v")
        until(page, "!document.getElementById('image').dataset.shown")
        assert fetched("s1") == (veiled["s1"], "no-store")
        logged = [(r["steward"], r["sample_id"], r["action"]) for r in reveals.rows(engine)]
        assert logged == [("alice", "s1", "reveal"), ("alice", "s1", "hide")]  # who saw what, and when
        with page.expect_navigation():
            page.keyboard.press("a")
        assert page.text_content("#simple") == "a photo of thing 2"
        assert page.text_content("#safety").startswith("Safety: safe")  # below every threshold: shown
        assert "NSFW detector 0.10" in page.text_content("#safety")
        assert "CLIP zero-shot NSFW 0.20" in page.text_content("#safety")
        assert page.locator("#veil-note").count() == 0
        assert fetched("s2") == (stored_image(tmp_path, "s2"), "private, max-age=3600")
        with page.expect_navigation():
            page.keyboard.press("a")
        assert page.text_content("#safety").startswith("Safety: suggestive (source label Soft)")
        assert "CLIP zero-shot NSFW 0.90" in page.text_content("#safety")  # below blur_at (mature),
        assert page.locator("#veil-note").count() == 1  # but at review.blur_score: blurred
        with page.expect_navigation():
            page.keyboard.press("a")
        assert "NSFW detector 0.70" in page.text_content("#safety")  # the trained detector's flag
        assert page.locator("#veil-note").count() == 1
        # what the browser itself was sent, preloads included: flagged items only ever blurred
        assert set(veiled) <= set(sent)
        assert sent["s1"][0] == (veiled["s1"], "no-store")  # before the reveal
        for sid in ("s3", "s4"):  # preloaded, then shown: never revealed
            assert all(got == (veiled[sid], "no-store") for got in sent[sid]), sid
        # the filters: safe only, by the source's label: s4 stays (Civitai says PG), s3 is decided
        page.select_option("select[name=safety_max]", "0")
        with page.expect_navigation():
            page.click("#filters button")
        assert page.text_content("#simple") == "a photo of thing 4"
        with page.expect_navigation():
            page.keyboard.press("a")
        assert page.locator("#empty").count() == 1
    assert outcome.effective(engine)["s1"]["decision"] == "accept"


GUIDELINES = """---
version: 2026-11
---
# Reviewing SURD

Accept when the caption says what the image shows. Reject with **low_quality** when the image is broken.
<script>window.pwned = 3</script>
"""


def test_a_steward_works_a_grid_page_with_the_keyboard_only(tmp_path: Path, browser) -> None:
    """Two rejects marked with their reasons, the rest accepted by one key; one row a decision in
    the log, each with the view and the guideline version; the audit item is not in the grid."""
    rules = tmp_path / "guidelines.md"
    rules.write_text(GUIDELINES)
    settings, engine = seed_review(tmp_path / "data", n=7, audit={7})
    settings = with_review(settings, guidelines=rules)
    reasons = settings.review.reject_reasons
    with ThreadedServer(create_app(settings), free_port()) as server:
        page = signed_in(browser, server.url)
        page.keyboard.press("g")  # from the single view to the grid
        page.wait_for_url("**/grid")
        until(page, "document.querySelectorAll('#grid img').length === 6")
        assert [page.get_attribute(f"#cell-{i} img", "data-sample") for i in range(6)] == [
            f"s{i}" for i in range(1, 7)
        ]  # s7, the audit item, is not here
        assert page.text_content("#guideline-version") == "2026-11"
        assert "Accept when the caption says" in page.text_content("#guidelines")
        assert page.evaluate("window.pwned") is None  # the guidelines' raw HTML is not markup
        assert "margin +0.20" in page.text_content("#cell-0")
        keys = ["l", "2", "ArrowRight", "ArrowRight", "x", "3"]  # s2: reason 2; s4: marked, then reason 3
        for k in keys:
            page.keyboard.press(k)
        assert page.text_content("#cell-1 .cell-verdict") == f"reject: {reasons[1]}"
        assert page.text_content("#cell-3 .cell-verdict") == f"reject: {reasons[2]}"
        with page.expect_navigation():
            page.keyboard.press("Enter")  # the page: one request
        assert page.locator("#empty").count() == 1  # nothing left for the grid but the audit item
        page.goto(server.url + "/")
        assert page.text_content("#simple") == "a photo of thing 7"
        assert "Audit item" in page.text_content(".badge")
        with page.expect_navigation():
            page.keyboard.press("a")

    log = list(queries.export_rows(engine, "audit"))
    assert [(a["sample_id"], a["decision"], a["reason"], a["view"]) for a in log] == [
        ("s1", "accept", None, "grid"),
        ("s2", "reject", reasons[1], "grid"),
        ("s3", "accept", None, "grid"),
        ("s4", "reject", reasons[2], "grid"),
        ("s5", "accept", None, "grid"),
        ("s6", "accept", None, "grid"),
        ("s7", "accept", None, "single"),
    ]
    assert {(a["actor"], a["guideline_version"]) for a in log} == {("alice", "2026-11")}
    assert all(a["created_at"] for a in log)


def test_a_skip_frees_the_item_at_once_for_another_steward(tmp_path: Path, browser) -> None:
    settings, engine = seed_review(tmp_path, n=4)
    settings = with_review(settings, claim_batch=1)
    auth.add_steward(engine, "bob", "battery staple")
    with ThreadedServer(create_app(settings), free_port()) as server:
        alice = signed_in(browser, server.url)
        assert alice.text_content("#simple") == "a photo of thing 1"
        bob = signed_in(browser, server.url, "bob", "battery staple")
        assert bob.text_content("#simple") == "a photo of thing 2"  # s1 is alice's
        with alice.expect_navigation():
            alice.keyboard.press("s")  # alice passes on s1: her lease ends now, not in 15 minutes
        assert alice.text_content("#simple") == "a photo of thing 3"  # and her claims leave it out
        with bob.expect_navigation():
            bob.keyboard.press("a")
        assert bob.text_content("#simple") == "a photo of thing 1"  # bob gets it
        with bob.expect_navigation():
            bob.keyboard.press("a")
    assert outcome.effective(engine)["s1"]["actor"] == "bob"


def test_a_comment_reaches_the_admin_page_and_the_export(tmp_path: Path, browser) -> None:
    settings, engine = seed_review(tmp_path, n=2)
    auth.add_steward(engine, "root", "admin password", "admin")
    with ThreadedServer(create_app(settings), free_port()) as server:
        page = signed_in(browser, server.url)
        page.keyboard.press("c")
        page.keyboard.type("the caption misses the watermark <b>here</b>")
        page.keyboard.press("Tab")
        page.keyboard.press("Space")  # flag it
        with page.expect_navigation():
            page.keyboard.press("Shift+Tab")
            page.keyboard.press("Enter")
        assert "alice flagged: the caption misses the watermark <b>here</b>" in page.text_content("#notes")
        admin = signed_in(browser, server.url, "root", "admin password")
        admin.goto(server.url + "/admin")
        row = admin.text_content("#flags")  # flags apart from comments: never pushed off
        assert "s1" in row and "alice" in row and "flag the caption misses the watermark <b>here</b>" in row
        exported = admin.request.get(server.url + "/admin/export?what=outcomes&format=jsonl").text()
    rows = {r["sample_id"]: r for r in map(json.loads, exported.splitlines())}
    assert rows["s1"]["comments"] == "alice: [flag] the caption misses the watermark <b>here</b>"
    assert rows["s2"]["comments"] is None


def test_a_taken_down_image_is_never_served(tmp_path: Path, browser) -> None:
    from surd.stages import takedown as enforce

    settings, engine = seed_review(tmp_path, n=2)
    with ThreadedServer(create_app(settings), free_port()) as server:
        page = signed_in(browser, server.url)
        assert page.request.get(f"{server.url}/image/s1").status == 200
        takedowns.add(engine, "sample", "s1", "the author asked", "admin:test")
        enforce.enforce(settings, chain.PIPELINE.data_dir(tmp_path))
        for route in ("image", "thumb"):
            assert page.request.get(f"{server.url}/{route}/s1").status in (404, 410)
        assert page.request.get(f"{server.url}/image/s2").status == 200
        page.reload()
        assert page.text_content("#simple") == "a photo of thing 2"  # and it left the queue


def test_a_steward_answers_the_papers_question_and_the_report_sets_it_beside_the_papers(
    tmp_path: Path, browser
) -> None:
    """One Table 1 prompt judged on /judge in the browser, as the paper measured it (does the
    image show the prompt's semantics?); the run's report then shows the stewards' accuracy beside
    the paper's hand-measured one."""
    import torch

    from adapter.evaluate import Scorers, evaluate
    from adapter.model import AdapterConfig, SURAdapter
    from adapter.suites import SUITES
    from surd.app.training import report_run
    from surd.models import tiny

    root = tmp_path / "data"
    settings, _ = seed_review(root, n=1)
    giraffes = next(p for p in SUITES["action"] if p.text == "Giraffes eating trees.")
    parts = tiny.stable_diffusion(0, tmp_path / "models")
    torch.manual_seed(0)
    adapter = SURAdapter(AdapterConfig(dim=parts["text_encoder"].config.hidden_size, llm_dim=16, eta=0.5))
    run = root / "runs" / "v0001-tiny-L-1-s0"

    def choose(a: Image.Image, b: Image.Image, prompt: str) -> float:
        return 0.5

    evaluate(parts, adapter, Scorers(choose=choose), run / "eval", 2, 2, {"action": [giraffes]})
    pairs = [json.loads(x) for x in (run / "eval" / "pairs.jsonl").read_text().splitlines()]
    assert [p["question"] for p in pairs] == ["Does the image show giraffes eating from trees?"] * 2

    answers = [("yes", "no"), ("yes", "yes")]  # (left, right) for the pairs in turn
    with ThreadedServer(create_app(settings), free_port()) as server:
        page = signed_in(browser, server.url)
        page.goto(server.url + "/judge/v0001-tiny-L-1-s0")
        for left, right in answers:
            assert page.text_content("#prompt") == "Giraffes eating trees."
            assert "Does the image show giraffes eating from trees?" in page.text_content("#question")
            page.check(f"#left-{left}")
            page.check(f"#right-{right}")
            with page.expect_navigation():
                page.click("#submit-answer")
        assert "Giraffes eating trees." in page.text_content("#accuracy")

    shows = [
        {"left": left == "yes", "right": right == "yes"} for left, right in answers
    ]  # what the adapter's and the baseline's images were said to show
    adapter_yes = sum(s[p["adapter_side"]] for s, p in zip(shows, pairs, strict=True))
    baseline_yes = sum(
        s["right" if p["adapter_side"] == "left" else "left"] for s, p in zip(shows, pairs, strict=True)
    )
    report = report_run(settings, str(run))
    assert report["human"]["accuracy"]["Giraffes eating trees."] == {
        "adapter": 50.0 * adapter_yes,
        "baseline": 50.0 * baseline_yes,
        "images": 2,
    }
    md = (run / "eval" / "report.md").read_text()
    row = f"| action | Giraffes eating trees. | 25.38 | 50.77 | {50.0 * baseline_yes:.1f}% | {50.0 * adapter_yes:.1f}% | human (2 image(s)) |"
    assert row in md, md
