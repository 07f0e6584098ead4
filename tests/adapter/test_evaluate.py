"""Evaluation as the paper does it, on tiny SD parts: suites, blinded pairs, CLIP choice, t-tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from adapter.evaluate import Scorers, adapter_on_left, evaluate
from adapter.model import AdapterConfig, SURAdapter
from adapter.pipeline import generate, sd_pipeline
from adapter.quality import load_metrics, paired_ttest
from adapter.suites import SUITES
from surd.models import tiny

pytestmark = pytest.mark.slow  # real evaluation runs: not in `make test-fast`


def test_three_suites_of_fifteen_marked_by_origin() -> None:
    assert set(SUITES) == {"action", "color", "counting"}
    for prompts in SUITES.values():
        assert len(prompts) == 15 and len({p.text for p in prompts}) == 15
        assert all(p.origin in ("paper", "ours") for p in prompts)
    origins = {s: {o: sum(p.origin == o for p in ps) for o in ("paper", "ours")} for s, ps in SUITES.items()}
    assert origins == {  # what a full evaluation's report states (`prompt_origins`)
        "action": {"paper": 3, "ours": 12},
        "color": {"paper": 6, "ours": 9},
        "counting": {"paper": 6, "ours": 9},
    }


def test_paired_t_test_by_hand() -> None:
    # differences 1, 2, 2, 3: mean 2, sd sqrt(2/3), t = 2 / (sd / 2) = 4.899; df 3 → p = 0.0163
    r = paired_ttest(baseline=[0, 0, 1, 1], adapter=[1, 2, 3, 4])
    assert r["t"] == pytest.approx(2 / (np.sqrt(2 / 3) / 2), rel=1e-9)
    assert r["p_value"] == pytest.approx(0.01628, abs=5e-5)
    assert r["baseline_mean"] == 0.5 and r["adapter_mean"] == 2.5 and r["n"] == 4
    assert paired_ttest([1, 2], [2, 3])["p_value"] is None  # constant differences: no test


def test_quality_metrics_are_skipped_with_a_reason_when_pyiqa_is_absent() -> None:
    import importlib.util

    assert importlib.util.find_spec("pyiqa") is None, (
        "this environment has pyiqa; the test checks its absence"
    )
    loaded, skipped = load_metrics(["clipiqa", "musiq", "brisque"])
    assert loaded == {} and set(skipped) == {"clipiqa", "musiq", "brisque"}
    assert all("pyiqa is not installed" in why for why in skipped.values())


def test_blinded_sides_are_stable_and_balanced() -> None:
    sides = [adapter_on_left(p.text, s) for ps in SUITES.values() for p in ps for s in range(10)]
    assert sides == [adapter_on_left(p.text, s) for ps in SUITES.values() for p in ps for s in range(10)]
    assert 0.35 < np.mean(sides) < 0.65


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    p = tiny.stable_diffusion(0, tmp_path_factory.mktemp("sd"))
    p["resolution"] = 32
    return p


def _adapter(parts) -> SURAdapter:
    dim = parts["text_encoder"].config.hidden_size
    torch.manual_seed(0)
    a = SURAdapter(AdapterConfig(dim=dim, llm_dim=16, eta=0.5))
    torch.nn.init.normal_(a.g.weight, std=0.5)  # a trained-looking adapter: c' differs from V
    return a


def test_same_seed_same_baseline_and_the_adapter_changes_the_image(parts) -> None:
    pipe = sd_pipeline(parts)
    a = np.asarray(generate(pipe, parts, "a red car", seed=3, steps=3))
    b = np.asarray(generate(pipe, parts, "a red car", seed=3, steps=3))
    c = np.asarray(generate(pipe, parts, "a red car", seed=3, steps=3, adapter=_adapter(parts)))
    assert a.shape == (32, 32, 3) and (a == b).all() and not (a == c).all()


def test_evaluate_writes_pairs_report_and_t_tests(parts, tmp_path: Path) -> None:
    suites = {k: v[:2] for k, v in SUITES.items()}
    seen: list[tuple[str, str]] = []

    def choose(a: Image.Image, b: Image.Image, prompt: str) -> float:
        seen.append((prompt, "choose"))
        return float(np.asarray(a).mean() > np.asarray(b).mean())

    def brightness(img: Image.Image, prompt: str = "") -> float:
        return float(np.asarray(img).mean())

    scorers = Scorers(
        choose=choose,
        similarity=brightness,
        quality={"brightness": brightness},
        skipped={"musiq": "no weights"},
    )
    report = evaluate(parts, _adapter(parts), scorers, tmp_path, images_per_prompt=2, steps=2, suites=suites)
    pairs = [json.loads(x) for x in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert len(pairs) == 12 == report["pairs"] and len(seen) == 12
    for p in pairs:
        assert (tmp_path / p["left"]).exists() and (tmp_path / p["right"]).exists()
        assert (p["adapter_side"] == "left") == p["left"].endswith("-adapter.png")
    t = {name: tests["paired"] for name, tests in report["t_tests"].items()}
    assert set(t) == {"clip_similarity", "brightness"} and t["brightness"]["n"] == 12
    ind = report["t_tests"]["brightness"]["independent"]
    assert ind["n"] == 12 and ind["verdict"] in ("comparable (p > 0.05)", "differs (p ≤ 0.05)", "no test")
    # the reported means are the means of what the scorer returned for the saved images
    base = [
        brightness(Image.open(tmp_path / p["left" if p["adapter_side"] == "right" else "right"]))
        for p in pairs
    ]
    assert t["brightness"]["baseline_mean"] == pytest.approx(np.mean(base), rel=1e-6)
    md = (tmp_path / "report.md").read_text()
    assert "automatic proxy" in md and "musiq: no weights" in md
    assert "| action | paper | 2 | 4 |" in md  # the first two action prompts are the paper's
    assert "Beside the paper" in md and "SD 1.5, LLaMA 13B, layer 40" in md and "differ" in md
    assert "| Counting % | 14.67 | 36.67 | Table 2 |" in md
    assert "Four freshly baked pies. | 63.08 | 73.85 |" in md and "CLIP proxy" in md
    assert Image.open(tmp_path / "grid.png").size == (32 * 4, 32 * 6)


PAPER = Path(__file__).resolve().parents[3] / "shared" / "PAPER.md"


def _paper_prompts() -> list[tuple[str, str]]:
    """(suite, prompt) of every prompt row of PAPER.md's prompt tables, as printed there."""
    rows = []
    for line in PAPER.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[0] in ("Action", "Color", "Counting") and len(cells) >= 2:
            rows.append((cells[0].lower(), cells[1]))
    return rows


@pytest.mark.skipif(not PAPER.exists(), reason="../shared/PAPER.md is not beside this checkout")
def test_every_prompt_the_paper_prints_is_in_the_suites_verbatim() -> None:
    printed = _paper_prompts()
    assert len(printed) == 15  # Tables 1/7 (nine) and 8 (six)
    ours = {(s, p.text): p for s, ps in SUITES.items() for p in ps}
    for suite, text in printed:
        assert (suite, text) in ours, text
        p = ours[(suite, text)]
        assert p.origin == "paper" and p.table in ("Table 1/7", "Table 8")


def test_each_suite_is_the_papers_size_with_its_table_7_accuracies() -> None:
    assert {s: len(ps) for s, ps in SUITES.items()} == {"action": 15, "color": 15, "counting": 15}
    paper = [p for ps in SUITES.values() for p in ps if p.origin == "paper"]
    assert len(paper) == 15 and len({p.text for ps in SUITES.values() for p in ps}) == 45
    table7 = {p.text: p.paper_accuracy for p in paper if p.table == "Table 1/7"}
    assert len(table7) == 9 and all(p.semantics for p in paper if p.table == "Table 1/7")
    assert table7["Seven vintage glass bottles."] == (0.00, 36.92)
    assert table7["Giraffes eating trees."] == (25.38, 50.77)


def test_the_papers_t_test_on_a_hand_case() -> None:
    """Two independent samples, Student's t with pooled variance, worked by hand: baseline
    1, 2, 3, 4 (mean 2.5, s² 5/3), adapter 2, 4, 6, 8 (mean 5, s² 20/3); pooled s² = 25/6;
    t = 2.5 / sqrt(25/6 · (1/4 + 1/4)) = sqrt(3) ≈ 1.7320508, 6 degrees of freedom."""
    from scipy import stats

    from adapter.quality import independent_ttest, paired_ttest, verdict

    res = independent_ttest([1, 2, 3, 4], [2, 4, 6, 8])
    assert res["t"] == pytest.approx(3**0.5, rel=1e-9)
    assert res["p_value"] == pytest.approx(2 * stats.t.sf(3**0.5, 6), rel=1e-9)
    assert res["p_value"] == pytest.approx(stats.ttest_ind([2, 4, 6, 8], [1, 2, 3, 4]).pvalue, rel=1e-12)
    assert verdict(res["p_value"]) == "comparable (p > 0.05)"  # p ≈ 0.134
    # the paired test on the same numbers: differences 1, 2, 3, 4 → t = 2.5 / (sqrt(5/3) / 2)
    paired = paired_ttest([1, 2, 3, 4], [2, 4, 6, 8])
    assert paired["t"] == pytest.approx(2.5 / ((5 / 3) ** 0.5 / 2), rel=1e-9)
    assert verdict(paired["p_value"]) == "differs (p ≤ 0.05)"
    assert verdict(None) == "no test"


def test_the_report_sets_human_accuracy_beside_the_papers() -> None:
    from adapter.report import build, render, with_judgements

    suites = {k: v[:3] for k, v in SUITES.items()}
    pairs = [
        {"suite": s, "prompt": p.text, "origin": p.origin, "clip_choice_adapter": 0.6}
        for s, ps in suites.items()
        for p in ps
    ]
    report = build(pairs, {}, {}, suites, 1, 4, {"layer": 12})
    md = render(report)
    assert "| Action % | 75.33 | 80.67 | Table 2 | 0.400 | 0.600 | CLIP proxy" in md and "layer 12" in md
    judged = with_judgements(
        report, {"accuracy": {"Giraffes eating trees.": {"adapter": 50.0, "baseline": 25.0, "images": 4}}}
    )
    md = render(judged)
    assert "| action | Giraffes eating trees. | 25.38 | 50.77 | 25.0% | 50.0% | human (4 image(s)) |" in md
    assert "| Action % | 75.33 | 80.67 | Table 2 | 25.000 | 50.000 | human, 4 image(s) judged |" in md
