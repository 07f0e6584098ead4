"""A release as training tensors: its rows (through storage.releases), its images as pixels and
VAE latents, its prompts as text-encoder states, and its prompts' LLM vectors of one layer
(through storage.embeddings)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from PIL import Image

from storage.embeddings import prompt_sha1, read_layer
from storage.releases import read_columns
from storage.schemas import image_bytes


def read_release(release: Path, split: str = "train") -> pa.Table:
    """A release's rows of one split: training reads `train` alone, the held-out loss `test`."""
    return read_columns(release, ["sample_id", "image", "simple_prompt", "complex_prompt"], split=split)


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
    for value in table.column("image").to_pylist():
        img = Image.open(io.BytesIO(image_bytes(value) or b"")).convert("RGB")
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


def llm_vectors(table: pa.Table, emb_dir: Path, layer: int) -> tuple[torch.Tensor, int]:
    """(N, H) float32 vectors of layer `layer` for the release's rows, in row order, each of the
    prompt the row holds now (an edited prompt's old vector is not used); the layer's number."""
    ids = table.column("sample_id").to_pylist()
    wanted = {
        sid: prompt_sha1(p) for sid, p in zip(ids, table.column("simple_prompt").to_pylist(), strict=True)
    }
    vectors, k = read_layer(emb_dir, layer, wanted)
    missing = [s for s in ids if s not in vectors]
    if missing:
        raise ValueError(f"{len(missing)} released samples have no embedding for layer {k}")
    return torch.from_numpy(np.stack([vectors[s] for s in ids])), k
