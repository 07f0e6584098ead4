"""The real models' ids, by name (light: what `surd doctor` and the settings' help name without
loading torch; surd.models.profiles loads them)."""

from __future__ import annotations

BLIP_REAL = "Salesforce/blip-image-captioning-base"
CLIP_REAL = ("ViT-B-32", "openai")
SD_REAL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
LLM_PRESETS = {
    "llama-7b": "huggyllama/llama-7b",
    "llama-13b": "huggyllama/llama-13b",
    "llama-33b": "huggyllama/llama-30b",
}
SMOLLM2 = "smollm2-135m"
