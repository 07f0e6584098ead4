"""A run's checkpoints and metrics log: each checkpoint assembled in a temp folder and renamed
whole, the latest found by name, the metrics log trimmed back to a checkpoint on resume."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from adapter.config import TrainConfig
from adapter.model import AdapterConfig, SURAdapter
from storage.provenance import code_identity
from storage.tables import atomic_write_bytes, fault_point


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
        json.dumps(
            {
                "adapter": adapter.cfg.to_dict(),
                "train": cfg.model_dump(),
                "step": step,
                "code": code_identity(),
                **extra,
            },
            indent=1,
        )
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


def trim_metrics(path: Path, step: int) -> None:
    """Keep the metrics lines up to `step` (the checkpoint resumed from); later ones are redone."""
    kept = []
    for ln in path.read_text().splitlines() if path.exists() else []:
        try:
            row = json.loads(ln)
        except json.JSONDecodeError:
            continue  # a line torn by a kill mid-append: its step is after the checkpoint, so redone
        if row["step"] <= step:
            kept.append(ln)
    atomic_write_bytes(path, "".join(ln + "\n" for ln in kept).encode())
