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


def test_three_suites_of_fifteen_marked_by_origin() -> None:
    assert set(SUITES) == {"action", "color", "counting"}
    for prompts in SUITES.values():
        assert len(prompts) == 15 and len({p.text for p in prompts}) == 15
        assert all(p.origin in ("paper", "ours") for p in prompts)


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
    t = report["paired_t_tests"]
    assert set(t) == {"clip_similarity", "brightness"} and t["brightness"]["n"] == 12
    # the reported means are the means of what the scorer returned for the saved images
    base = [
        brightness(Image.open(tmp_path / p["left" if p["adapter_side"] == "right" else "right"]))
        for p in pairs
    ]
    assert t["brightness"]["baseline_mean"] == pytest.approx(np.mean(base), rel=1e-6)
    md = (tmp_path / "report.md").read_text()
    assert "automatic proxy" in md and "musiq: no weights" in md and "| action | 2 (0 / 2) |" in md
    assert Image.open(tmp_path / "grid.png").size == (32 * 4, 32 * 6)
