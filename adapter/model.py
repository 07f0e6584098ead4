"""The SUR-adapter of Zhong et al. (2023), Sec. 4.2.

With V = f_En(p_s), the text encoder's states of the simple prompt:
    Q = h3(V), K = h2(V), att = softmax(Q Kᵀ / √d), V' = att · V
    c = g(V' + V + h1(V' + V))          (g zero-initialised, so c = 0 at the start)
    c' = η · c + (1 − η) · V
W0 is a fixed Kaiming-initialised projection of the LLM vector to Q's width, seeded and saved
with the checkpoint (the paper's public code drew it at random and never saved it).

Two variants, side by side (`q_encoder_layers`, setting `adapter.q_encoder_layers`):

    paper, Sec. 4.2 (default, 0)      Q = h3(V)
    public code (SUR_adapter.py, 2)   Q = TransformerEncoder_2(h3(V)): two encoder layers on the Q
                                      branch before the attention and the ℓ_LLM distillation
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class AdapterConfig:
    dim: int
    llm_dim: int
    eta: float = 0.1
    tau: float = 1.0
    w0_seed: int = 0
    q_encoder_layers: int = 0  # >0: the public code's variant, a transformer encoder on Q

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


class SURAdapter(nn.Module):
    def __init__(self, cfg: AdapterConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        self.h1 = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))
        self.h2 = nn.Linear(d, d)
        self.h3 = nn.Linear(d, d)
        self.q_encoder = (
            nn.TransformerEncoder(
                nn.TransformerEncoderLayer(d, max(1, d // 64), 4 * d, batch_first=True), cfg.q_encoder_layers
            )
            if cfg.q_encoder_layers
            else None
        )
        self.g = nn.Linear(d, d)
        nn.init.zeros_(self.g.weight)
        nn.init.zeros_(self.g.bias)
        gen = torch.Generator().manual_seed(cfg.w0_seed)
        w0 = torch.empty(d, cfg.llm_dim)
        nn.init.kaiming_uniform_(w0, a=math.sqrt(5), generator=gen)
        self.register_buffer("w0", w0)  # fixed, saved, never trained

    def forward(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """v: (B, T, d) → (c', Q), both (B, T, d)."""
        q = self.h3(v)
        if self.q_encoder is not None:
            q = self.q_encoder(q)
        k = self.h2(v)
        att = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(v.shape[-1]), dim=-1)
        v_prime = att @ v
        c = self.g(v_prime + v + self.h1(v_prime + v))
        return self.cfg.eta * c + (1 - self.cfg.eta) * v, q


def kl(p_logits: torch.Tensor, q_logits: torch.Tensor, tau: float) -> torch.Tensor:
    """KL(softmax(p/τ) ‖ softmax(q/τ)) over the last dim, mean over the rest."""
    p_log = F.log_softmax(p_logits / tau, dim=-1)
    q_log = F.log_softmax(q_logits / tau, dim=-1)
    return (p_log.exp() * (p_log - q_log)).sum(-1).mean()


def loss_llm(adapter: SURAdapter, llm_vec: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """ℓ_LLM = KL(W0·f_LLM(p_s)/τ ‖ Q/τ), Q mean-pooled over tokens (Eq. 5)."""
    w0: torch.Tensor = adapter.w0  # type: ignore[assignment]
    target = llm_vec.float() @ w0.T
    return kl(target, q.mean(1), adapter.cfg.tau)


def loss_cp(c_prime: torch.Tensor, complex_states: torch.Tensor, tau: float) -> torch.Tensor:
    """ℓ_CP = KL(c'/τ ‖ f_En(p_c)/τ) per token (Eq. 8)."""
    return kl(c_prime, complex_states, tau)
