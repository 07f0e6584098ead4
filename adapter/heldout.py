"""The adapter on the release's `test` split: its diffusion loss (ℓ_simple, the noise the UNet
predicts from the adapted simple prompt) beside the baseline's (the simple prompt's own text
states), on samples it was never trained on, with the same noise and timesteps for both. Every
release's test split is frozen (surd.stages.splits), so two releases' adapters can be compared
on the samples they share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from adapter.data import precompute, read_release
from adapter.model import SURAdapter


@torch.no_grad()
def test_split_loss(
    parts: dict[str, Any], adapter: SURAdapter, release: Path, resolution: int, draws: int = 4, seed: int = 0
) -> dict[str, Any]:
    """{rows, draws, loss_simple_adapter, loss_simple_baseline} over the release's test split
    (`rows` 0 and no losses when it is empty or the release has no splits)."""
    try:
        table = read_release(release, split="test")
    except ValueError:
        return {"rows": 0, "draws": draws}
    if not table.num_rows:
        return {"rows": 0, "draws": draws}
    unet, sched = parts["unet"], parts["scheduler"]
    dev = next(unet.parameters()).device
    cache = precompute(parts, table, resolution)
    latents, simple = cache["latents"].to(dev), cache["simple"].to(dev)
    gen = torch.Generator().manual_seed(seed)
    ours, base = [], []
    adapter.eval()
    for _ in range(draws):
        noise = torch.randn(latents.shape, generator=gen).to(dev)
        t = torch.randint(0, sched.config.num_train_timesteps, (len(latents),), generator=gen).to(dev)
        noisy = sched.add_noise(latents, noise, t)
        c_prime, _ = adapter(simple)
        ours.append(F.mse_loss(unet(noisy, t, encoder_hidden_states=c_prime).sample.float(), noise).item())
        base.append(F.mse_loss(unet(noisy, t, encoder_hidden_states=simple).sample.float(), noise).item())
    return {
        "rows": table.num_rows,
        "draws": draws,
        "loss_simple_adapter": round(sum(ours) / draws, 6),
        "loss_simple_baseline": round(sum(base) / draws, 6),
    }
