"""Evaluate an adapter as the paper does: baseline vs adapter images from the same seeds, and
CLIP's binary choice between them for the prompt (softmax over the two, mean over a suite).

The CLIP chooser is passed in (the pipeline gives its own CLIP), so this package stays free of
the rest of the project.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from adapter.model import SURAdapter
from adapter.train import encode_text

# The paper's suites (Action, Color, Counting); these few are our own, of the same kinds.
SUITES = {
    "action": ["a dog running on the beach", "a man riding a horse", "a cat sitting on a chair"],
    "color": ["a red car on a blue street", "a yellow flower in green grass", "a white bird in the dark sky"],
    "counting": ["two cats on a bed", "three trees near a lake", "four people walking in the city"],
}

Chooser = Callable[[Image.Image, Image.Image, str], float]


@torch.no_grad()
def generate(
    parts: dict[str, Any],
    prompt: str,
    seed: int,
    steps: int,
    adapter: SURAdapter | None = None,
    guidance: float = 7.5,
) -> Image.Image:
    """DDIM sampling with classifier-free guidance; the adapter rewrites the prompt's states."""
    from diffusers import DDIMScheduler

    unet, vae = parts["unet"], parts["vae"]
    sched = DDIMScheduler.from_config(parts["scheduler"].config)
    sched.set_timesteps(steps)
    cond = encode_text(parts, [prompt])
    if adapter is not None:
        cond = adapter(cond)[0]
    uncond = encode_text(parts, [""])
    res = parts.get("resolution", 512)
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    gen = torch.Generator().manual_seed(seed)
    latents = torch.randn((1, unet.config.in_channels, res // factor, res // factor), generator=gen)
    latents = latents * sched.init_noise_sigma
    for t in sched.timesteps:
        inp = torch.cat([latents, latents])
        noise = unet(inp, t, encoder_hidden_states=torch.cat([uncond, cond])).sample
        n_u, n_c = noise.chunk(2)
        latents = sched.step(n_u + guidance * (n_c - n_u), t, latents).prev_sample
    img = vae.decode(latents / vae.config.scaling_factor).sample[0]
    arr = ((img.clamp(-1, 1) + 1) * 127.5).permute(1, 2, 0).numpy().astype(np.uint8)
    return Image.fromarray(arr)


def evaluate(
    parts: dict[str, Any],
    adapter: SURAdapter,
    chooser: Chooser,
    out_dir: Path,
    images_per_prompt: int,
    steps: int,
    suites: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    """Write report.md, report.json and grid.png to out_dir and return the scores."""
    suites = suites or SUITES
    out_dir.mkdir(parents=True, exist_ok=True)
    scores: dict[str, float] = {}
    grid_rows: list[Image.Image] = []
    for suite, prompts in suites.items():
        choices = []
        for prompt in prompts:
            row = []
            for i in range(images_per_prompt):
                base = generate(parts, prompt, seed=i, steps=steps)
                ours = generate(parts, prompt, seed=i, steps=steps, adapter=adapter)
                choices.append(chooser(ours, base, prompt))
                row.extend([base, ours])
            grid_rows.append(_hstack(row))
        scores[suite] = float(np.mean(choices))
    grid = _vstack(grid_rows)
    grid.save(out_dir / "grid.png")
    report = {
        "clip_choice_adapter_vs_baseline": scores,
        "images_per_prompt": images_per_prompt,
        "sampling_steps": steps,
        "note": "1.0 = CLIP always prefers the adapter's image, 0.5 = no preference",
    }
    (out_dir / "report.json").write_text(json.dumps(report, indent=1))
    lines = [
        "# SUR-adapter evaluation",
        "",
        "CLIP binary choice between the adapter's and the baseline's image for each prompt "
        "(same seeds), mean over the suite; 0.5 = no preference.",
        "",
        "| suite | prompts | CLIP choice of adapter |",
        "|---|---|---|",
        *[f"| {s} | {len(suites[s])} | {v:.3f} |" for s, v in scores.items()],
        "",
        "Grid (`grid.png`): per prompt row, pairs of baseline | adapter images.",
        "",
    ]
    (out_dir / "report.md").write_text("\n".join(lines))
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
