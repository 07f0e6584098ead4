"""Glue between the pipeline and `adapter/`: settings → TrainConfig, and CLIP as the chooser."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from storage.layout import DataDir
from surd.embed import EmbeddingStore
from surd.settings import Settings


def train_config(settings: Settings) -> Any:
    """The adapter section of the settings as the trainer's config (same field names)."""
    from dataclasses import fields

    from adapter.train import TrainConfig

    return TrainConfig(**{f.name: getattr(settings.adapter, f.name) for f in fields(TrainConfig)})


def run_dir(data: DataDir, release: Path, llm_model_id: str, settings: Settings) -> Path:
    a = settings.adapter
    return (
        data.runs_dir / f"{release.name}-{EmbeddingStore(data, llm_model_id).dir.name}-L{a.layer}-s{a.seed}"
    )


def run_train(settings: Settings, data: DataDir, release: Path, llm_model_id: str) -> dict[str, Any]:
    from adapter.train import train
    from surd.models import profiles

    sd = profiles.stable_diffusion(settings)
    out = run_dir(data, release, llm_model_id, settings)
    summary = train(sd.model, release, EmbeddingStore(data, llm_model_id).dir, out, train_config(settings))
    return {**summary, "run_dir": str(out), "base_model": sd.model_id}


def clip_chooser(settings: Settings) -> Any:
    """p(CLIP picks image a over image b for the prompt): softmax over the two similarities."""
    import torch

    from surd.models import profiles

    loaded = profiles.clip(settings)
    model, preprocess, tok = loaded.model, loaded.processor, loaded.extra

    def choose(a: Image.Image, b: Image.Image, prompt: str) -> float:
        with torch.inference_mode():
            imgs = model.encode_image(torch.stack([preprocess(a), preprocess(b)]), normalize=True)
            txt = model.encode_text(tok([prompt]), normalize=True)
            p = (model.logit_scale.exp() * (imgs @ txt.T).squeeze(-1)).softmax(0)
        return float(p[0])

    return choose


def run_evaluate(settings: Settings, data: DataDir, run: Path) -> dict[str, Any]:
    from adapter.evaluate import evaluate
    from adapter.train import latest_checkpoint, load_adapter
    from surd.models import profiles

    ckpt = latest_checkpoint(run)
    if ckpt is None:
        raise FileNotFoundError(f"no checkpoint in {run}; train first")
    sd = profiles.stable_diffusion(settings)
    a = settings.adapter
    report = evaluate(
        sd.model,
        load_adapter(ckpt),
        clip_chooser(settings),
        run / "eval",
        images_per_prompt=a.eval_images_per_prompt,
        steps=a.eval_steps,
    )
    return {**report, "report": str(run / "eval" / "report.md")}
