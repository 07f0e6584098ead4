"""Evaluate an adapter as the paper does: baseline vs adapter images from the same seeds for the
Action, Color and Counting suites, CLIP's binary choice between them for the prompt (softmax over
the two, mean over a suite), quality metrics with both t-tests (Table 3's and a paired one), the
paper's figures beside the run's (adapter.report), and an image grid.

Semantic accuracy was judged by people in the paper: every pair is saved with a blinded side
(`pairs.jsonl`) for stewards to judge (the review server's /judge page). The CLIP choice is an
automatic *proxy* for it and is labelled so.

The scorers are passed in (the pipeline gives its own CLIP), so this package stays free of the
rest of the project.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from adapter.model import SURAdapter
from adapter.pipeline import generate, sd_pipeline
from adapter.report import build, render, with_judgements
from adapter.suites import SUITES, Prompt
from storage.provenance import code_identity
from storage.tables import atomic_write_bytes, fault_point

Chooser = Callable[[Image.Image, Image.Image, str], float]


@dataclass
class Scorers:
    choose: Chooser  # p(image a is preferred over image b for the prompt)
    similarity: Callable[[Image.Image, str], float] | None = None  # 100·cos(image, prompt)
    quality: dict[str, Callable[[Image.Image], float]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # metric → why it did not run


def adapter_on_left(prompt: str, seed: int) -> bool:
    """The blinded side of a pair for human judging: stable, and half the pairs each way."""
    return hashlib.sha256(f"{prompt}/{seed}".encode()).digest()[0] % 2 == 0


def _save_blind(folder: Path, stem: str, base: Image.Image, ours: Image.Image, stamp: float) -> None:
    """A pair's two images, written in an order that varies from pair to pair (a hash of the pair,
    not the side) and given the same file time, so neither order nor time tells a judge which is
    the adapter's."""
    sides = [("baseline", base), ("adapter", ours)]
    if hashlib.sha256(f"{stem}/write-order".encode()).digest()[0] % 2:
        sides.reverse()
    for side, image in sides:
        image.save(folder / f"{stem}-{side}.png")
    for side, _ in sides:
        os.utime(folder / f"{stem}-{side}.png", (stamp, stamp))


def evaluate(
    parts: dict[str, Any],
    adapter: SURAdapter,
    scorers: Scorers | Chooser,
    out_dir: Path,
    images_per_prompt: int,
    steps: int,
    suites: dict[str, list[Prompt]] | None = None,
    progress: Callable[[str], None] | None = None,
    run: dict[str, Any] | None = None,
    test_split: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write images/, pairs.jsonl, report.md, report.json and grid.png; return the report.
    `run` describes the run (base model, LLM, layer …) for the report's comparison with the paper.

    Everything is written into a temp folder beside `out_dir`, which then takes its place: a
    killed evaluation leaves no half-written report or pairs file for a reader (or a judge)."""
    if not isinstance(scorers, Scorers):
        scorers = Scorers(choose=scorers)
    suites = suites or SUITES
    final, out_dir = out_dir, out_dir.parent / f".tmp-{out_dir.name}-{uuid.uuid4().hex[:8]}"
    for stale in final.parent.glob(f".tmp-{final.name}-*"):
        shutil.rmtree(stale)  # left by a killed evaluation
    (out_dir / "images").mkdir(parents=True)
    pipe = sd_pipeline(parts)
    started = time.time()  # every judged image carries this time: file times tell no side
    choice: dict[str, float] = {}
    per_metric: dict[str, dict[str, list[float]]] = {}
    if scorers.similarity is not None:
        per_metric["clip_similarity"] = {"baseline": [], "adapter": []}
    for name in scorers.quality:
        per_metric[name] = {"baseline": [], "adapter": []}
    pairs: list[dict[str, Any]] = []
    grid_rows: list[Image.Image] = []
    for suite, prompts in suites.items():
        choices = []
        for pi, prompt in enumerate(prompts):
            row = []
            for seed in range(images_per_prompt):
                base = generate(pipe, parts, prompt.text, seed=seed, steps=steps)
                ours = generate(pipe, parts, prompt.text, seed=seed, steps=steps, adapter=adapter)
                choices.append(scorers.choose(ours, base, prompt.text))
                stem = f"{suite}-{pi:02d}-s{seed}"
                _save_blind(out_dir / "images", stem, base, ours, started)
                fault_point("evaluation", len(pairs) + 1)
                pairs.append(_pair(stem, suite, prompt, seed, choices[-1]))
                if scorers.similarity is not None:
                    per_metric["clip_similarity"]["baseline"].append(scorers.similarity(base, prompt.text))
                    per_metric["clip_similarity"]["adapter"].append(scorers.similarity(ours, prompt.text))
                for name, metric in scorers.quality.items():
                    per_metric[name]["baseline"].append(metric(base))
                    per_metric[name]["adapter"].append(metric(ours))
                row.extend([base, ours])
            grid_rows.append(_hstack(row))
            if progress:
                progress(f"{suite} {pi + 1}/{len(prompts)}")
        choice[suite] = float(np.mean(choices))
    _vstack(grid_rows).save(out_dir / "grid.png")
    with (out_dir / "pairs.jsonl").open("w") as fh:
        fh.writelines(json.dumps(p) + "\n" for p in pairs)
    report = build(pairs, per_metric, scorers.skipped, suites, images_per_prompt, steps, run)
    if test_split is not None:  # the held-out loss on the release's test split (adapter.heldout)
        report["test_split"] = test_split
    write_report(out_dir, report)
    fault_point("evaluation_report", 1)
    _replace_dir(out_dir, final)
    return report


def _pair(stem: str, suite: str, prompt: Prompt, seed: int, choice: float) -> dict[str, Any]:
    """One judging pair: its two images, the adapter's side (a stable coin flip), CLIP's choice."""
    left = adapter_on_left(prompt.text, seed)
    return {
        "pair_id": stem,
        "suite": suite,
        "prompt": prompt.text,
        "origin": prompt.origin,
        "seed": seed,
        "left": f"images/{stem}-{'adapter' if left else 'baseline'}.png",
        "right": f"images/{stem}-{'baseline' if left else 'adapter'}.png",
        "adapter_side": "left" if left else "right",
        "clip_choice_adapter": choice,
        "table": prompt.table,
        "question": f"Does the image show {prompt.semantics}?" if prompt.semantics else None,
    }


def _replace_dir(tmp: Path, final: Path) -> None:
    """`tmp` becomes `final`; an earlier `final` is moved aside first, then removed."""
    old = final.parent / f".old-{final.name}-{uuid.uuid4().hex[:8]}"
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old)


def write_report(eval_dir: Path, report: dict[str, Any]) -> None:
    """report.json and report.md, each written whole (temp file, then rename)."""
    report = {**report, "code": code_identity()}
    for name, text in (("report.json", json.dumps(report, indent=1)), ("report.md", render(report))):
        atomic_write_bytes(eval_dir / name, text.encode())


def rejudged(eval_dir: Path, human: dict[str, Any]) -> dict[str, Any]:
    """Rewrite an evaluation's report with what people judged on its pairs (adapter.report)."""
    report = with_judgements(json.loads((eval_dir / "report.json").read_text()), human)
    write_report(eval_dir, report)
    return report


def _hstack(images: list[Image.Image]) -> Image.Image:
    w, h = images[0].size
    out = Image.new("RGB", (w * len(images), h))
    for i, im in enumerate(images):
        out.paste(im, (i * w, 0))
    return out


def _vstack(images: list[Image.Image]) -> Image.Image:
    w = max(i.size[0] for i in images)
    h = images[0].size[1]
    out = Image.new("RGB", (w, h * len(images)))
    for i, im in enumerate(images):
        out.paste(im, (0, i * h))
    return out
