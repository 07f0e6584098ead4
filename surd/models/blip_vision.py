"""BLIP's vision tower on torch's fused attention (`caption.vision_attention = "sdpa"`).

transformers runs BLIP's ViT with eager attention: the 577×577 score matrix of every head is made,
softmaxed and read back. `scaled_dot_product_attention` computes the same function in one kernel
(flash or memory-efficient attention on a GPU), but not bit for bit: captions may differ where two
beams were nearly tied. Off by default; `benchmarks/gpu_check.py` prints its speed and the share
of captions that stay the same, and the setting is for an operator who accepts that.
"""

from __future__ import annotations

import types
from typing import Any

import torch
import torch.nn.functional as F


def _sdpa_forward(self: Any, hidden_states: torch.Tensor, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """BlipAttention.forward with the fused kernel: same projections, same scale, no weights out."""
    b, t, d = hidden_states.shape
    qkv = self.qkv(hidden_states).reshape(b, t, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
    out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], scale=self.scale)
    return self.projection(out.transpose(1, 2).reshape(b, t, d)), None


def use_sdpa(model: Any) -> int:
    """Run the vision tower's attention on SDPA (in place); returns how many layers changed."""
    layers = model.vision_model.encoder.layers
    for layer in layers:
        layer.self_attn.forward = types.MethodType(_sdpa_forward, layer.self_attn)
    return len(layers)
