"""The application layer's glue between the settings and `adapter/`: the settings' adapter
section as the trainer's config, CLIP as the evaluation's chooser, and training, evaluation and
generation as one call each, under the run's write lock (the CLI and the flows call these)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from adapter.checkpoints import latest_checkpoint, load_adapter
from adapter.evaluate import Scorers, evaluate, rejudged
from adapter.heldout import test_split_loss
from adapter.pipeline import generate, sd_pipeline
from adapter.quality import load_metrics
from adapter.suites import SUITES
from adapter.train import train as train_adapter
from storage.embeddings import EmbeddingStore
from storage.layout import DataDir
from surd.models import profiles
from surd.pipeline import open_data, writing
from surd.review import judgments, queue
from surd.settings import Settings


def train_config(settings: Settings) -> Any:
    """The adapter section of the settings as the trainer's config (same field names)."""
    return settings.adapter.train_config()


def run_dir(data: DataDir, release: Path, llm_model_id: str, settings: Settings) -> Path:
    a = settings.adapter
    return (
        data.runs_dir / f"{release.name}-{EmbeddingStore(data, llm_model_id).dir.name}-L{a.layer}-s{a.seed}"
    )


def run_train(
    settings: Settings,
    data: DataDir,
    release: Path,
    llm_model_id: str,
    log: Callable[[dict[str, float]], None] | None = None,
) -> dict[str, Any]:
    sd = profiles.stable_diffusion(settings)
    out = run_dir(data, release, llm_model_id, settings)
    summary = train_adapter(
        sd.model, release, EmbeddingStore(data, llm_model_id).dir, out, train_config(settings), log=log
    )
    return {**summary, "run_dir": str(out), "base_model": sd.model_id}


def clip_scorers(settings: Settings) -> Any:
    """CLIP as the paper's chooser (softmax over two images' similarities to the prompt) and as a
    similarity (100·cos), plus the pyiqa quality metrics that can load here."""
    loaded = profiles.clip(settings)
    model, preprocess, tok = loaded.model, loaded.processor, loaded.extra

    def choose(a: Image.Image, b: Image.Image, prompt: str) -> float:
        with torch.inference_mode():
            imgs = model.encode_image(torch.stack([preprocess(a), preprocess(b)]), normalize=True)
            txt = model.encode_text(tok([prompt]), normalize=True)
            p = (model.logit_scale.exp() * (imgs @ txt.T).squeeze(-1)).softmax(0)
        return float(p[0])

    def similarity(a: Image.Image, prompt: str) -> float:
        with torch.inference_mode():
            img = model.encode_image(preprocess(a).unsqueeze(0), normalize=True)
            txt = model.encode_text(tok([prompt]), normalize=True)
        return float(100 * (img @ txt.T).item())

    quality, skipped = load_metrics(settings.adapter.eval_quality_metrics)
    return Scorers(choose=choose, similarity=similarity, quality=quality, skipped=skipped)


def generate_images(
    settings: Settings, run: Path, prompt: str, out: Path, n: int, seed: int, steps: int, baseline: bool
) -> list[Path]:
    """`surd generate`: n images of the prompt with the run's adapter (and the baseline's, if asked)."""
    ckpt = latest_checkpoint(run)
    if ckpt is None:
        raise FileNotFoundError(f"no checkpoint in {run}; train first")
    parts = profiles.stable_diffusion(settings).model
    adapter = load_adapter(ckpt)
    pipe = sd_pipeline(parts)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i in range(n):
        for kind, a in (("adapter", adapter), ("baseline", None)) if baseline else (("adapter", adapter),):
            path = out / f"{kind}-s{seed + i}.png"
            generate(pipe, parts, prompt, seed=seed + i, steps=steps, adapter=a).save(path)
            written.append(path)
    return written


def run_evaluate(
    settings: Settings, data: DataDir, run: Path, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    ckpt = latest_checkpoint(run)
    if ckpt is None:
        raise FileNotFoundError(f"no checkpoint in {run}; train first")
    sd = profiles.stable_diffusion(settings)
    a = settings.adapter
    trained = json.loads((ckpt / "config.json").read_text())
    info = {
        "base model": sd.model_id,
        "LLM embeddings": trained.get("embeddings"),
        "layer": trained.get("layer"),
        "release": trained.get("release"),
        "training steps": trained.get("step"),
    }
    adapter = load_adapter(ckpt)
    release = data.releases_dir / str(trained.get("release") or "")
    heldout = (
        test_split_loss(sd.model, adapter, release, sd.model.get("resolution", a.resolution))
        if trained.get("release") and (release / "manifest.json").exists()
        else None
    )
    report = evaluate(
        sd.model,
        adapter,
        clip_scorers(settings),
        run / "eval",
        images_per_prompt=a.eval_images_per_prompt,
        steps=a.eval_steps,
        suites={k: v[: a.eval_prompts_per_suite] for k, v in SUITES.items()},
        progress=progress,
        run=info,
        test_split=heldout,
    )
    report = with_judgements(settings, run) or report  # judgements of an earlier evaluation of it
    return {**report, "report": str(run / "eval" / "report.md")}


def with_judgements(settings: Settings, run: Path) -> dict[str, Any] | None:
    """Rewrite a run's evaluation report with what stewards judged on its pairs (the /judge page):
    human accuracy per Table 1/7 prompt beside the paper's, and their blinded preferences. None
    when nobody has judged it yet (the report keeps the CLIP proxy, labelled)."""
    pairs = judgments.run_pairs(Path(settings.data_root), run.name)
    engine = queue.connect(settings.review_database_url)
    try:
        seen = judgments.human(engine, run.name, pairs)
    finally:
        engine.dispose()
    if not seen["accuracy"] and not seen["preference"]:
        return None
    return rejudged(run / "eval", seen)


def report_run(settings: Settings, run: str) -> dict[str, Any]:
    """The run's evaluation report brought up to date with the judgements so far (no images made)."""
    path = Path(run)
    with writing(settings, f"run-{path.name}"):  # its eval/ folder
        if not (path / "eval" / "report.json").exists():
            raise FileNotFoundError(f"no evaluation in {path}; run `surd evaluate` first")
        report = with_judgements(settings, path) or json.loads((path / "eval" / "report.json").read_text())
    return {**report, "report": str(path / "eval" / "report.md")}


def train(
    settings: Settings,
    release_path: str,
    llm_model_id: str,
    log: Callable[[dict[str, float]], None] | None = None,
) -> dict[str, Any]:
    """Train (or resume) the adapter on a release and its embeddings; the run's summary."""
    data = open_data(settings)
    run = run_dir(data, Path(release_path), llm_model_id, settings)
    with writing(settings, f"run-{run.name}"):  # its checkpoints, and the stale temp cleanup
        return run_train(settings, data, Path(release_path), llm_model_id, log=log)


def evaluate_run(
    settings: Settings, run: str, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Evaluate a run's latest checkpoint against the baseline; the report's summary."""
    data = open_data(settings)
    with writing(settings, f"run-{Path(run).name}"):  # its eval/ folder
        return run_evaluate(settings, data, Path(run), progress=progress)
