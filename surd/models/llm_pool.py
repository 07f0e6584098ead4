"""Per-layer mean pooling of a LLaMA-like model's decoder blocks, fast.

Layer k (1…L) is the output of decoder block k, before the final norm. Sequences are grouped into
buckets of equal token length, so a batch has no padding and needs no mask (SDPA's causal fast
path); a forward hook on each block reduces its output to the (B, H) mean as the block runs, so
no [layers × batch × tokens × hidden] tensor ever exists. Batches are sized by a token budget.
Results are copied to pinned host memory asynchronously; the caller consumes them in another
thread so the GPU never waits on disk.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch


def decoder_layers(model: Any) -> Any:
    base = getattr(model, "model", model)
    layers = getattr(base, "layers", None)
    if layers is None:
        raise TypeError(f"{type(model).__name__} has no decoder `layers`; not a LLaMA-like model")
    return layers


def equal_length_batches(lengths: Sequence[int], batch_tokens: int) -> list[list[int]]:
    """Indices grouped by exact length, each group cut so that rows × length ≤ batch_tokens."""
    by_len: dict[int, list[int]] = defaultdict(list)
    for i, n in enumerate(lengths):
        by_len[n].append(i)
    out: list[list[int]] = []
    for n in sorted(by_len):
        rows = max(1, batch_tokens // max(n, 1))
        idx = by_len[n]
        out.extend(idx[i : i + rows] for i in range(0, len(idx), rows))
    return out


@dataclass
class PooledBatch:
    indices: list[int]
    host: torch.Tensor  # (B, L, H) float16, pinned when on CUDA
    ready: torch.cuda.Event | None

    def numpy(self) -> Any:
        if self.ready is not None:
            self.ready.synchronize()
        return self.host.numpy()


class LayerPooler:
    """Mean over tokens of every decoder block's output, for batches of equal-length sequences."""

    def __init__(self, model: Any, compile_blocks: bool = False) -> None:
        self.model = model
        self.base = getattr(model, "model", model)
        self.layers = decoder_layers(model)
        self.device = next(model.parameters()).device
        self._out: torch.Tensor | None = None
        self._handles = [layer.register_forward_hook(self._hook(k)) for k, layer in enumerate(self.layers)]
        if compile_blocks:  # fuse each block's norms, rotary and activations; hooks stay outside
            for layer in self.layers:
                layer.compile(dynamic=True)

    def _hook(self, k: int) -> Any:
        def hook(_module: Any, _inp: Any, out: Any) -> None:
            h = out[0] if isinstance(out, tuple) else out
            assert self._out is not None
            self._out[:, k] = h.mean(dim=1, dtype=torch.float32)

        return hook

    def close(self) -> None:
        for h in self._handles:
            h.remove()

    @torch.inference_mode()
    def pool(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, T) of one length → (B, L, H) float32 on the model's device."""
        b = ids.shape[0]
        self._out = torch.empty(
            b, len(self.layers), self.base.config.hidden_size, device=self.device, dtype=torch.float32
        )
        self.base(input_ids=ids.to(self.device, non_blocking=True), use_cache=False)
        out, self._out = self._out, None
        return out

    def run(self, seqs: Sequence[Sequence[int]], batch_tokens: int) -> Iterator[PooledBatch]:
        """Pool every sequence; yields batches in length order with their input indices."""
        cuda = self.device.type == "cuda"
        if any(len(s) == 0 for s in seqs):
            raise ValueError("an empty token sequence has no mean; drop empty prompts before embedding")
        for idx in equal_length_batches([len(s) for s in seqs], batch_tokens):
            ids = torch.tensor([list(seqs[i]) for i in idx], dtype=torch.long)
            if cuda:
                ids = ids.pin_memory()
            pooled = self.pool(ids).to(torch.float16)
            if cuda:
                host = torch.empty(pooled.shape, dtype=torch.float16, pin_memory=True)
                host.copy_(pooled, non_blocking=True)
                event = torch.cuda.Event()
                event.record()
                yield PooledBatch(idx, host, event)
            else:
                yield PooledBatch(idx, pooled, None)


def pooled_layers(model: Any, tokenizer: Any, prompts: list[str]) -> Any:
    """(B, L, H) float32 numpy: masked mean over tokens of each decoder block's output, on a padded
    batch. The reference for `LayerPooler`, and usable with any padding side."""
    device = next(model.parameters()).device
    enc = tokenizer(prompts, return_tensors="pt", padding=True)
    mask = enc["attention_mask"].to(device)
    denom = mask.sum(1, keepdim=True).clamp(min=1).float()
    pooled: list[torch.Tensor] = []

    def hook(_module: Any, _inp: Any, out: Any) -> None:
        h = out[0] if isinstance(out, tuple) else out
        pooled.append(((h.float() * mask[..., None]).sum(1) / denom).cpu())

    handles = [layer.register_forward_hook(hook) for layer in decoder_layers(model)]
    try:
        with torch.inference_mode():
            base = getattr(model, "model", model)
            base(input_ids=enc["input_ids"].to(device), attention_mask=mask)
    finally:
        for h in handles:
            h.remove()
    return torch.stack(pooled, dim=1).numpy()
