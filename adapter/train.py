"""Train the SUR-adapter on a release and one LLM layer; frozen UNet, VAE and text encoder.

Named steps: load the release's tensors → freeze and place the frozen parts → build the adapter,
optimiser and schedule → resume from the last checkpoint → step (Algorithm 1) → checkpoint.
Every random draw of step s comes from a generator seeded with (seed, s), so a run killed and
resumed from its last checkpoint ends with the same weights as an uninterrupted one.
`python -m adapter.train` runs it on a diffusers Stable Diffusion folder (`main`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers.optimization import get_scheduler
from pydantic import ValidationError
from safetensors.torch import load_file

from adapter.checkpoints import latest_checkpoint, save_checkpoint, trim_metrics
from adapter.config import TrainConfig
from adapter.data import encode_latents, encode_text, llm_vectors, pixels, precompute, read_release
from adapter.model import AdapterConfig, SURAdapter, loss_cp, loss_llm
from storage.tables import fault_point

Log = Callable[[dict[str, float]], None] | None


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


class Trainer:
    """One training run over a release: each named step a method, `run` the loop."""

    def __init__(
        self, parts: dict[str, Any], release: Path, emb_dir: Path, out_dir: Path, cfg: TrainConfig
    ) -> None:
        self.parts, self.release, self.emb_dir, self.out_dir, self.cfg = parts, release, emb_dir, out_dir, cfg
        out_dir.mkdir(parents=True, exist_ok=True)
        for stale in out_dir.glob(".tmp-*"):
            shutil.rmtree(stale)
        self.unet, self.vae, self.sched = parts["unet"], parts["vae"], parts["scheduler"]
        for m in (self.unet, self.vae, parts["text_encoder"]):
            m.requires_grad_(False)
        self.table = read_release(release)
        llm, self.layer = llm_vectors(self.table, emb_dir, cfg.layer)
        self.dev = next(self.unet.parameters()).device
        self.step_unet = self._place_unet()
        self.res = parts.get("resolution", cfg.resolution)
        self._inputs()
        self.llm = llm.to(self.dev)

    def _place_unet(self) -> Any:
        """The frozen UNet as the steps call it: bf16 (and compiled, if asked) on a GPU."""
        if self.dev.type != "cuda":
            return self.unet
        self.unet.to(torch.bfloat16)  # frozen: bf16 weights, no per-step casts under autocast
        return torch.compile(self.unet) if self.cfg.compile_unet else self.unet

    def _inputs(self) -> None:
        """VAE latents and text states once (the cache), or the pixels to encode every step."""
        if self.cfg.cache_latents:
            cache = precompute(self.parts, self.table, self.res, self.cfg.random_flip)
            self.cache = {k: v.to(self.dev) for k, v in cache.items()}
            self.text_dim = self.cache["simple"].shape[-1]
        else:
            self.pix = pixels(self.table, self.res)
            self.simple = self.table.column("simple_prompt").to_pylist()
            self.complex = self.table.column("complex_prompt").to_pylist()
            self.text_dim = self.parts["text_encoder"].config.hidden_size
        down = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.latent_shape = (
            self.cfg.batch_size,
            self.unet.config.in_channels,
            self.res // down,
            self.res // down,
        )

    def build(self) -> int:
        """The adapter, its optimiser and schedule (seeded), resumed from the last checkpoint if
        there is one; returns the step it resumes after (0: a fresh run)."""
        cfg = self.cfg
        acfg = AdapterConfig(
            dim=self.text_dim,
            llm_dim=self.llm.shape[-1],
            eta=cfg.eta,
            tau=cfg.tau,
            w0_seed=cfg.seed,
            q_encoder_layers=cfg.q_encoder_layers,
        )
        torch.manual_seed(cfg.seed)
        self.adapter = SURAdapter(acfg).to(self.dev)
        self.opt = torch.optim.AdamW(self.adapter.parameters(), lr=cfg.lr)
        self.lr_sched = get_scheduler(
            cfg.lr_scheduler, self.opt, num_warmup_steps=cfg.lr_warmup_steps, num_training_steps=cfg.steps
        )
        start = 0
        ckpt = latest_checkpoint(self.out_dir)
        if ckpt is not None:
            self.adapter.load_state_dict(load_file(str(ckpt / "adapter.safetensors")))
            state = torch.load(ckpt / "state.pt", weights_only=False)
            self.opt.load_state_dict(state["optimizer"])
            if state.get("lr_scheduler") is not None:
                self.lr_sched.load_state_dict(state["lr_scheduler"])
            start = state["step"]
        # accelerate places the trainable parts and runs the backward pass (bf16 autocast is
        # explicit in training_step, around the frozen UNet too)
        self.accelerator = Accelerator(cpu=self.dev.type == "cpu")
        self.p_adapter, self.p_opt, self.p_sched = self.accelerator.prepare(
            self.adapter, self.opt, self.lr_sched
        )
        return int(start)

    def batch(self, step: int) -> tuple[torch.Tensor, ...]:
        """Step `step`'s draws (samples, flips, noise, timesteps: from a generator seeded with
        (seed, step)) and its inputs: latents, simple and complex text states, LLM vectors."""
        cfg, dev = self.cfg, self.dev
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        idx = torch.randint(0, self.table.num_rows, (cfg.batch_size,), generator=gen)
        flip = torch.rand(cfg.batch_size, generator=gen) < 0.5
        if not cfg.random_flip:
            flip[:] = False
        noise = torch.randn(self.latent_shape, generator=gen).to(dev)
        t = torch.randint(0, self.sched.config.num_train_timesteps, (cfg.batch_size,), generator=gen).to(dev)
        if cfg.cache_latents:
            latents = self.cache["latents"][idx.to(dev)]
            if cfg.random_flip:
                mirrored = self.cache["latents_flipped"][idx.to(dev)]
                latents = torch.where(flip.to(dev).view(-1, 1, 1, 1), mirrored, latents)
            simple, complex_ = self.cache["simple"][idx.to(dev)], self.cache["complex"][idx.to(dev)]
        else:  # VAE and text encoder every step
            batch = self.pix[idx]
            batch = torch.where(flip.view(-1, 1, 1, 1), batch.flip(-1), batch)
            latents = encode_latents(self.vae, batch).to(dev)
            rows = idx.tolist()
            simple = encode_text(self.parts, [self.simple[i] for i in rows]).to(dev)
            complex_ = encode_text(self.parts, [self.complex[i] for i in rows]).to(dev)
        return latents, noise, t, simple, complex_, self.llm[idx.to(dev)]

    def run(self, log: Log = None) -> dict[str, Any]:
        """Train (or resume) to `cfg.steps`; metrics to out_dir/metrics.jsonl; the summary."""
        cfg = self.cfg
        start = self.build()
        metrics = self.out_dir / "metrics.jsonl"
        trim_metrics(metrics, start)
        for step in range(start + 1, cfg.steps + 1):
            latents, noise, t, simple, complex_, llm = self.batch(step)
            losses = training_step(
                self.step_unet, self.sched, self.p_adapter, self.p_opt, latents, noise, t, simple, complex_,
                llm, cfg, backward=self.accelerator.backward, lr_scheduler=self.p_sched,
            )  # fmt: skip
            row = {"step": step, **{k: v.item() for k, v in losses.items()}}
            with metrics.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            fault_point("metrics", step)  # a kill between checkpoints: the resume rewrites these lines
            if log:
                log(row)
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                extra = {"release": self.release.name, "embeddings": self.emb_dir.name, "layer": self.layer}
                adapter = self.accelerator.unwrap_model(self.p_adapter)
                save_checkpoint(self.out_dir, adapter, self.opt, step, cfg, extra, self.lr_sched)
        final = latest_checkpoint(self.out_dir)
        return {
            "checkpoint": str(final),
            "steps": cfg.steps,
            "layer": self.layer,
            "samples": self.table.num_rows,
        }


def train(
    parts: dict[str, Any], release: Path, emb_dir: Path, out_dir: Path, cfg: TrainConfig, log: Log = None
) -> dict[str, Any]:
    """Train (or resume) and return a summary; metrics go to out_dir/metrics.jsonl."""
    return Trainer(parts, release, emb_dir, out_dir, cfg).run(log)


def load_parts(model_dir: str) -> dict[str, Any]:
    """The frozen parts of a diffusers Stable Diffusion folder (or hub id): unet, vae, text
    encoder, tokenizer, DDPM scheduler."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel  # heavy: only for main
    from transformers import CLIPTextModel, CLIPTokenizer

    return {
        "unet": UNet2DConditionModel.from_pretrained(model_dir, subfolder="unet"),
        "vae": AutoencoderKL.from_pretrained(model_dir, subfolder="vae"),
        "text_encoder": CLIPTextModel.from_pretrained(model_dir, subfolder="text_encoder"),
        "tokenizer": CLIPTokenizer.from_pretrained(model_dir, subfolder="tokenizer"),
        "scheduler": DDPMScheduler.from_pretrained(model_dir, subfolder="scheduler"),
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m adapter.train", description="Train the SUR-adapter.")
    p.add_argument("--model", required=True, help="a diffusers Stable Diffusion folder (or hub id)")
    p.add_argument("--release", required=True, type=Path, help="a release folder (manifest.json, shards)")
    p.add_argument("--embeddings", required=True, type=Path, help="the release's embedding set folder")
    p.add_argument("--out", required=True, type=Path, help="the run folder (resumed if it has checkpoints)")
    for name, field in TrainConfig.model_fields.items():
        flag = "--" + name.replace("_", "-")
        if field.annotation is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=field.description)
        else:
            kind: Callable[[str], Any] = {int: int, float: float}.get(field.annotation, str)  # type: ignore[call-overload,arg-type]
            p.add_argument(flag, type=kind, default=None, help=field.description)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m adapter.train --model M --release R --embeddings E --out O [--steps N …]`: train
    outside the pipeline; prints the run's summary as JSON."""
    cli = parser()
    args = cli.parse_args(argv)
    given = {k: v for k, v in vars(args).items() if k in TrainConfig.model_fields and v is not None}
    try:
        cfg = TrainConfig(**given)
    except ValidationError as exc:  # a value out of bounds: one line, exit 2, before any work
        err = exc.errors()[0]
        cli.error(f"--{str(err['loc'][0]).replace('_', '-')}: {err['msg']}")
    parts = load_parts(args.model)
    parts["resolution"] = cfg.resolution
    summary = train(parts, args.release, args.embeddings, args.out, cfg, log=None)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
