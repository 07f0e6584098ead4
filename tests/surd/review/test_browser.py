"""A steward's session in a real browser: Debian's Chromium driven by Playwright, keyboard only."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from PIL import Image

from storage.layout import DataDir
from storage.schemas import OK
from surd.review import auth, outcome, queries, queue
from surd.review.app import create_app
from surd.settings import load_settings
from tests.conftest import free_port
from tests.serve import ThreadedServer

pytestmark = pytest.mark.slow  # subprocesses, servers or a browser: not in `make test-fast`

CHROMIUM = "/usr/bin/chromium"
XSS = "<script>window.pwned=1;alert('xss')</script><img src=x onerror=\"window.pwned=2\"> a castle"


def seed_review(
    root: Path, n: int = 4, labels: dict[int, str] | None = None, scores: dict[int, float] | None = None
):
    """A data root with n queued items and their images; s1's complex prompt is an XSS payload.
    `labels`: the source's NSFW label of some items (else Civitai's browsing level 1, PG)."""
    data = DataDir(root).open()
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
            }
        )
        buf = io.BytesIO()
        Image.new("RGB", (512, 512), (40 * i, 120, 200 - 30 * i)).save(buf, "JPEG")
        row = dict.fromkeys(data.table("images").schema.names)
        row.update(sample_id=f"s{i}", status=OK, image=buf.getvalue())
        images.append(row)
    queue.enqueue(engine, rows)
    data.table("images").write(images)
    return settings, engine


def signed_in(browser, url: str):
    """A new page, signed in as alice (the keyboard-only test types it all itself)."""
    page = browser.new_page()
    page.goto(url + "/login")
    page.fill("#name", "alice")
    page.fill("#password", "correct horse")
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


def test_a_flagged_image_stays_blurred_until_the_steward_reveals_it(tmp_path: Path, browser) -> None:
    settings, engine = seed_review(tmp_path, n=3, labels={1: "X", 3: "Soft"}, scores={2: 0.2, 3: 0.9})
    settings = settings.model_copy(update={"review": settings.review.model_copy(update={"blur_score": 0.8})})
    with ThreadedServer(create_app(settings), free_port()) as server:
        page = signed_in(browser, server.url)
        blur = "getComputedStyle(document.getElementById('image')).filter"
        assert page.text_content("#simple") == "a photo of thing 1"
        assert page.text_content("#safety").startswith("Safety: explicit (source label X)")
        assert page.evaluate(blur).startswith("blur(")  # flagged: blurred from the first paint
        page.keyboard.press("v")
        assert page.evaluate(blur) == "none" and "press v to blur" in page.text_content("#veil-note")
        page.keyboard.press("v")
        assert page.evaluate(blur).startswith("blur(")
        with page.expect_navigation():
            page.keyboard.press("a")
        assert page.text_content("#simple") == "a photo of thing 2"
        assert page.text_content("#safety").startswith("Safety: safe")  # below the level: shown
        assert "CLIP zero-shot NSFW 0.20" in page.text_content("#safety")
        assert page.evaluate(blur) == "none" and page.locator("#veil-note").count() == 0
        with page.expect_navigation():
            page.keyboard.press("a")
        assert page.text_content("#safety").startswith("Safety: suggestive (source label Soft)")
        assert "CLIP zero-shot NSFW 0.90" in page.text_content("#safety")  # below blur_at (2, mature),
        assert page.evaluate(blur).startswith("blur(")  # but at review.blur_score: blurred
        # the filters: safe only leaves nothing of these but what is decided
        page.select_option("select[name=safety_max]", "0")
        with page.expect_navigation():
            page.click("#filters button")
        assert page.locator("#empty").count() == 1
    assert outcome.effective(engine)["s1"]["decision"] == "accept"


def test_a_steward_answers_the_papers_question_and_the_report_sets_it_beside_the_papers(
    tmp_path: Path, browser
) -> None:
    """One Table 1 prompt judged on /judge in the browser, as the paper measured it (does the
    image show the prompt's semantics?); the run's report then shows the stewards' accuracy beside
    the paper's hand-measured one."""
    import json

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
