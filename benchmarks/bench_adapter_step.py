"""SUR-adapter training step on SD 1.5 (frozen UNet, VAE, text encoder; random weights of the
real architectures): seconds per step and peak memory, with cached latents and text states
(the pipeline's default) and without (VAE and text encoder every step), optionally with
gradient checkpointing.

    python benchmarks/bench_adapter_step.py --size sd15 --batch 16 --steps 30
    python benchmarks/bench_adapter_step.py --size tiny --batch 2 --steps 2     # CPU smoke run
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from common import device, peak_gb, report, timed

SD15_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    cross_attention_dim=768,
    attention_head_dim=8,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
)
SD15_VAE = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    layers_per_block=2,
    sample_size=512,
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
)
SD15_TEXT = dict(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
)
TINY_UNET = dict(
    sample_size=16,
    in_channels=4,
    out_channels=4,
    layers_per_block=1,
    block_out_channels=(32, 64),
    cross_attention_dim=32,
    attention_head_dim=8,
    norm_num_groups=32,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
)
TINY_VAE = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    block_out_channels=(32, 64),
    norm_num_groups=32,
    down_block_types=("DownEncoderBlock2D",) * 2,
    up_block_types=("UpDecoderBlock2D",) * 2,
)
TINY_TEXT = dict(
    vocab_size=49408,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    max_position_embeddings=77,
)


def build(size: str, dev: torch.device) -> dict:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    sd = size == "sd15"
    frozen = torch.bfloat16 if dev.type == "cuda" else torch.float32
    with torch.device(dev):
        unet = UNet2DConditionModel(**(SD15_UNET if sd else TINY_UNET)).to(frozen).eval()
        vae = AutoencoderKL(**(SD15_VAE if sd else TINY_VAE)).to(frozen).eval()
        text = CLIPTextModel(CLIPTextConfig(**(SD15_TEXT if sd else TINY_TEXT))).to(frozen).eval()
    for m in (unet, vae, text):
        m.requires_grad_(False)
    return {
        "unet": unet,
        "vae": vae,
        "text": text,
        "sched": DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
        "res": 512 if sd else 32,
        "llm_dim": 5120 if sd else 64,
    }


def bench_mode(m: dict, mode: str, b: int, steps: int, dev: torch.device) -> dict:
    from adapter.config import TrainConfig
    from adapter.model import AdapterConfig, SURAdapter
    from adapter.train import training_step

    unet, vae, text, sched, res = m["unet"], m["vae"], m["text"], m["sched"], m["res"]
    dim = text.config.hidden_size
    cfg = TrainConfig(batch_size=b)
    unet.disable_gradient_checkpointing()
    if "checkpointing" in mode:
        unet.enable_gradient_checkpointing()
    if "channels_last" in mode:
        unet = unet.to(memory_format=torch.channels_last)
    if "compile" in mode:
        unet = torch.compile(unet)
    adapter = SURAdapter(AdapterConfig(dim=dim, llm_dim=m["llm_dim"])).to(dev)
    opt = torch.optim.AdamW(adapter.parameters(), lr=1e-5)
    g = torch.Generator(device=dev).manual_seed(0)
    side = res // 2 ** (len(vae.config.block_out_channels) - 1)
    state = {
        "latents": torch.randn(b, 4, side, side, device=dev, generator=g),
        "simple": torch.randn(b, 77, dim, device=dev, generator=g),
        "complex": torch.randn(b, 77, dim, device=dev, generator=g),
    }
    llm = torch.randn(b, m["llm_dim"], device=dev, generator=g)
    pixels = torch.randn(b, 3, res, res, device=dev, generator=g)
    ids = torch.randint(0, 49408, (2 * b, 77), device=dev, generator=g)

    def step() -> None:
        if mode.startswith("uncached"):  # VAE and text encoder every step
            with torch.no_grad():
                state["latents"] = vae.encode(pixels.to(vae.dtype)).latent_dist.sample().float() * 0.18215
                states = text(ids)[0].float()
                state["simple"], state["complex"] = states[:b], states[b:]
        noise = torch.randn(state["latents"].shape, device=dev, generator=g)
        t = torch.randint(0, 1000, (b,), device=dev, generator=g)
        training_step(
            unet, sched, adapter, opt, state["latents"], noise, t, state["simple"], state["complex"], llm, cfg
        )

    for _ in range(3):  # warm-up (and compilation, where asked)
        step()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds = timed(step, repeat=steps)
    return {
        "bench": "adapter_step",
        "mode": mode,
        "batch": b,
        "resolution": res,
        "s_per_step": round(seconds, 4),
        "peak_mem_gb": peak_gb(),
    }


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="sd15", choices=["sd15", "tiny"])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--modes", nargs="+", default=["cached", "uncached", "cached+checkpointing"])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    dev = device()
    m = build(args.size, dev)
    results = []
    for mode in args.modes:
        r = {**bench_mode(m, mode, args.batch, args.steps, dev), "size": args.size}
        report(r, args.out)
        results.append(r)
    return results


if __name__ == "__main__":
    main()
