"""Train the SUR-adapter on a release and one LLM layer; frozen UNet, VAE and text encoder.

Named steps: load → freeze → precompute (VAE latents and text states cached once) → step →
checkpoint → (adapter.evaluate). Every random draw of step s comes from a generator seeded with
(seed, s), so a run killed and resumed from its last checkpoint ends with the same weights as an
uninterrupted one.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers.optimization import get_scheduler
from PIL import Image
from safetensors.torch import load_file, save_file

from adapter.model import AdapterConfig, SURAdapter, loss_cp, loss_llm
from storage.embeddings import prompt_sha1, read_layer
from storage.releases import read_columns
from storage.tables import atomic_write_bytes, fault_point


@dataclass
class TrainConfig:
    steps: int = 5000
    batch_size: int = 16
    lr: float = 1e-5
    lambda_llm: float = 1e-5
    lambda_cp: float = 1e-5
    eta: float = 0.1
    tau: float = 1.0
    resolution: int = 512
    checkpoint_every: int = 500
    seed: int = 0
    layer: int = -1
    q_encoder_layers: int = 0  # 0: the paper's adapter; 2: the public code's variant (adapter/model.py)
    random_flip: bool = True  # horizontal flip, p = 0.5 per sample and step (the paper's --random_flip)
    cache_latents: bool = True  # VAE latents and text states computed once; False: every step
    lr_scheduler: str = "constant"  # diffusers' get_scheduler name (the paper: constant, no warm-up)
    lr_warmup_steps: int = 0
    compile_unet: bool = True  # on a GPU: torch.compile the frozen UNet (0.131 → 0.089 s/step on H200)


def read_release(release: Path) -> pa.Table:
    return read_columns(release, ["sample_id", "image", "simple_prompt", "complex_prompt"])


def encode_text(parts: dict[str, Any], prompts: list[str]) -> torch.Tensor:
    tok = parts["tokenizer"]
    ids = tok(
        prompts, padding="max_length", truncation=True, max_length=tok.model_max_length, return_tensors="pt"
    ).input_ids
    enc = parts["text_encoder"]
    with torch.no_grad():
        return enc(ids.to(enc.device))[0].float()


def pixels(table: pa.Table, resolution: int) -> torch.Tensor:
    """The release's images as (N, 3, r, r) in [-1, 1]: centre-cropped to a square, then resized."""
    pics = []
    for b in table.column("image").to_pylist():
        img = Image.open(io.BytesIO(b)).convert("RGB")
        side = min(img.size)
        left, top = (img.width - side) // 2, (img.height - side) // 2
        img = img.crop((left, top, left + side, top + side)).resize(
            (resolution, resolution), Image.Resampling.BICUBIC
        )
        pics.append(torch.from_numpy(np.asarray(img, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1))
    return torch.stack(pics)


def encode_latents(vae: Any, pix: torch.Tensor) -> torch.Tensor:
    """VAE latents (the posterior mean, scaled), 16 images at a time."""
    with torch.no_grad():
        return (
            torch.cat(
                [
                    vae.encode(pix[i : i + 16].to(vae.device, vae.dtype)).latent_dist.mean.float()
                    for i in range(0, len(pix), 16)
                ]
            )
            * vae.config.scaling_factor
        )


def precompute(
    parts: dict[str, Any], table: pa.Table, resolution: int, flip: bool = False
) -> dict[str, torch.Tensor]:
    """VAE latents (and those of the mirrored images, for random flips) and text states of every
    sample, computed once and reused every step."""
    pix = pixels(table, resolution)
    out = {
        "latents": encode_latents(parts["vae"], pix),
        "simple": encode_text(parts, table.column("simple_prompt").to_pylist()),
        "complex": encode_text(parts, table.column("complex_prompt").to_pylist()),
    }
    if flip:
        out["latents_flipped"] = encode_latents(parts["vae"], pix.flip(-1))
    return out


def latest_checkpoint(out_dir: Path) -> Path | None:
    ckpts = sorted(out_dir.glob("ckpt-*")) if out_dir.exists() else []
    return ckpts[-1] if ckpts else None


def save_checkpoint(
    out_dir: Path,
    adapter: SURAdapter,
    opt: torch.optim.Optimizer,
    step: int,
    cfg: TrainConfig,
    extra: dict[str, Any],
    lr_scheduler: Any = None,
) -> Path:
    tmp = out_dir / f".tmp-{uuid.uuid4().hex}"
    tmp.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in adapter.state_dict().items()}, str(tmp / "adapter.safetensors"))
    (tmp / "config.json").write_text(
        json.dumps({"adapter": adapter.cfg.to_dict(), "train": asdict(cfg), "step": step, **extra}, indent=1)
    )
    torch.save(
        {
            "optimizer": opt.state_dict(),
            "lr_scheduler": lr_scheduler.state_dict() if lr_scheduler is not None else None,
            "step": step,
            "torch_rng": torch.get_rng_state(),
        },
        tmp / "state.pt",
    )
    final = out_dir / f"ckpt-{step:06d}"
    fault_point("checkpoint_written", step)  # every file in the temp folder, not yet renamed
    os.replace(tmp, final)
    fault_point("checkpoint", step)
    return final


def load_adapter(ckpt: Path) -> SURAdapter:
    cfg = json.loads((ckpt / "config.json").read_text())["adapter"]
    adapter = SURAdapter(AdapterConfig(**cfg))
    adapter.load_state_dict(load_file(str(ckpt / "adapter.safetensors")))
    return adapter.eval()


def training_step(
    unet: Any,
    sched: Any,
    adapter: SURAdapter,
    opt: torch.optim.Optimizer,
    latents: torch.Tensor,
    noise: torch.Tensor,
    t: torch.Tensor,
    simple: torch.Tensor,
    complex_: torch.Tensor,
    llm: torch.Tensor,
    cfg: TrainConfig,
    backward: Callable[[torch.Tensor], None] | None = None,
    lr_scheduler: Any = None,
) -> dict[str, torch.Tensor]:
    """One optimiser step of Algorithm 1: ℓ_simple + λ1·ℓ_LLM + λ2·ℓ_CP, adapter weights only.
    On a GPU the frozen UNet runs under bf16 autocast."""
    dev = latents.device
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
        noisy = sched.add_noise(latents, noise, t)
        c_prime, q = adapter(simple)
        pred = unet(noisy, t, encoder_hidden_states=c_prime).sample
    l_simple = F.mse_loss(pred.float(), noise.float())
    l_llm = loss_llm(adapter, llm, q.float())
    l_cp = loss_cp(c_prime.float(), complex_.float(), cfg.tau)
    loss = l_simple + cfg.lambda_llm * l_llm + cfg.lambda_cp * l_cp
    opt.zero_grad(set_to_none=True)
    (backward or torch.Tensor.backward)(loss)
    opt.step()
    if lr_scheduler is not None:
        lr_scheduler.step()
    return {
        "loss": loss.detach(),
        "loss_simple": l_simple.detach(),
        "loss_llm": l_llm.detach(),
        "loss_cp": l_cp.detach(),
    }


def train(
    parts: dict[str, Any],
    release: Path,
    emb_dir: Path,
    out_dir: Path,
    cfg: TrainConfig,
    log: Callable[[dict[str, float]], None] | None = None,
) -> dict[str, Any]:
    """Train (or resume) and return a summary; metrics go to out_dir/metrics.jsonl."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob(".tmp-*"):
        shutil.rmtree(stale)
    unet, vae, text, sched = parts["unet"], parts["vae"], parts["text_encoder"], parts["scheduler"]
    for m in (unet, vae, text):
        m.requires_grad_(False)
    table = read_release(release)
    wanted = {
        sid: prompt_sha1(p)
        for sid, p in zip(
            table.column("sample_id").to_pylist(), table.column("simple_prompt").to_pylist(), strict=True
        )
    }
    vectors, layer = read_layer(emb_dir, cfg.layer, wanted)
    missing = [s for s in table.column("sample_id").to_pylist() if s not in vectors]
    if missing:
        raise ValueError(f"{len(missing)} released samples have no embedding for layer {layer}")
    llm = torch.from_numpy(np.stack([vectors[s] for s in table.column("sample_id").to_pylist()]))
    dev = next(unet.parameters()).device
    step_unet = unet
    if dev.type == "cuda":
        unet.to(torch.bfloat16)  # frozen: bf16 weights, no per-step casts under autocast
        if cfg.compile_unet:
            step_unet = torch.compile(unet)
    res = parts.get("resolution", cfg.resolution)
    simple_prompts = table.column("simple_prompt").to_pylist()
    complex_prompts = table.column("complex_prompt").to_pylist()
    if cfg.cache_latents:
        cache = {k: v.to(dev) for k, v in precompute(parts, table, res, cfg.random_flip).items()}
        text_dim = cache["simple"].shape[-1]
    else:
        pix = pixels(table, res)
        text_dim = parts["text_encoder"].config.hidden_size
    latent_shape = (
        cfg.batch_size,
        unet.config.in_channels,
        res // 2 ** (len(vae.config.block_out_channels) - 1),
        res // 2 ** (len(vae.config.block_out_channels) - 1),
    )
    llm = llm.to(dev)
    acfg = AdapterConfig(
        dim=text_dim,
        llm_dim=llm.shape[-1],
        eta=cfg.eta,
        tau=cfg.tau,
        w0_seed=cfg.seed,
        q_encoder_layers=cfg.q_encoder_layers,
    )
    torch.manual_seed(cfg.seed)
    adapter = SURAdapter(acfg).to(dev)
    opt = torch.optim.AdamW(adapter.parameters(), lr=cfg.lr)
    lr_sched = get_scheduler(
        cfg.lr_scheduler, opt, num_warmup_steps=cfg.lr_warmup_steps, num_training_steps=cfg.steps
    )
    start = 0
    ckpt = latest_checkpoint(out_dir)
    if ckpt is not None:
        adapter.load_state_dict(load_file(str(ckpt / "adapter.safetensors")))
        state = torch.load(ckpt / "state.pt", weights_only=False)
        opt.load_state_dict(state["optimizer"])
        if state.get("lr_scheduler") is not None:
            lr_sched.load_state_dict(state["lr_scheduler"])
        start = state["step"]
    # accelerate places the trainable parts and runs the backward pass (bf16 autocast is explicit
    # in training_step, around the frozen UNet too)
    accelerator = Accelerator(cpu=dev.type == "cpu")
    p_adapter, p_opt, p_sched = accelerator.prepare(adapter, opt, lr_sched)
    metrics_path = out_dir / "metrics.jsonl"
    kept = []
    for ln in metrics_path.read_text().splitlines() if metrics_path.exists() else []:
        try:
            row = json.loads(ln)
        except json.JSONDecodeError:
            continue  # a line torn by a kill mid-append: its step is after the checkpoint, so redone
        if row["step"] <= start:
            kept.append(ln)
    atomic_write_bytes(metrics_path, "".join(ln + "\n" for ln in kept).encode())
    n = table.num_rows
    for step in range(start + 1, cfg.steps + 1):
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        idx = torch.randint(0, n, (cfg.batch_size,), generator=gen)
        flip = torch.rand(cfg.batch_size, generator=gen) < 0.5
        if not cfg.random_flip:
            flip[:] = False
        noise = torch.randn(latent_shape, generator=gen).to(dev)
        t = torch.randint(0, sched.config.num_train_timesteps, (cfg.batch_size,), generator=gen).to(dev)
        if cfg.cache_latents:
            latents = cache["latents"][idx.to(dev)]
            if cfg.random_flip:
                mirrored = cache["latents_flipped"][idx.to(dev)]
                latents = torch.where(flip.to(dev).view(-1, 1, 1, 1), mirrored, latents)
            simple, complex_ = cache["simple"][idx.to(dev)], cache["complex"][idx.to(dev)]
        else:  # VAE and text encoder every step
            batch = pix[idx]
            batch = torch.where(flip.view(-1, 1, 1, 1), batch.flip(-1), batch)
            latents = encode_latents(vae, batch).to(dev)
            simple = encode_text(parts, [simple_prompts[i] for i in idx.tolist()]).to(dev)
            complex_ = encode_text(parts, [complex_prompts[i] for i in idx.tolist()]).to(dev)
        losses = training_step(
            step_unet,
            sched,
            p_adapter,
            p_opt,
            latents,
            noise,
            t,
            simple,
            complex_,
            llm[idx.to(dev)],
            cfg,
            backward=accelerator.backward,
            lr_scheduler=p_sched,
        )
        row = {"step": step, **{k: v.item() for k, v in losses.items()}}
        with metrics_path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        fault_point("metrics", step)  # a kill between checkpoints: the resume rewrites these lines
        if log:
            log(row)
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            save_checkpoint(
                out_dir,
                accelerator.unwrap_model(p_adapter),
                opt,
                step,
                cfg,
                {"release": release.name, "embeddings": emb_dir.name, "layer": layer},
                lr_sched,
            )
    final = latest_checkpoint(out_dir)
    return {"checkpoint": str(final), "steps": cfg.steps, "layer": layer, "samples": n}
