"""The training settings: one definition, with its bounds. The application layer's settings
(`surd.settings.AdapterSettings`) extend it with what training does not read (the base model,
the evaluation); `python -m adapter.train` takes each field as a flag."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: int = Field(5000, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(1e-5, gt=0)
    lambda_llm: float = 1e-5
    lambda_cp: float = 1e-5
    eta: float = Field(0.1, ge=0, le=1)
    tau: float = Field(1.0, gt=0)
    resolution: int = Field(512, ge=8)
    checkpoint_every: int = Field(500, ge=1)
    seed: int = 0
    layer: int = Field(-1, description="LLM layer 1..L; -1 = last")
    q_encoder_layers: int = Field(0, ge=0, description="0: the paper's adapter; 2: its public code's")
    random_flip: bool = Field(True, description="horizontal flip, p = 0.5 per sample and step")
    cache_latents: bool = Field(True, description="VAE latents and text states once, reused every step")
    lr_scheduler: str = Field("constant", description="diffusers' get_scheduler name (the paper: constant)")
    lr_warmup_steps: int = Field(0, ge=0)
    compile_unet: bool = Field(True, description="on a GPU: torch.compile the frozen UNet")
