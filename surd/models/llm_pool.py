"""Per-layer mean pooling of a LLaMA-like model's decoder blocks, fast.

Layer k (1…L) is the output of decoder block k, before the final norm. Sequences are grouped into
buckets of equal token length, so a batch has no padding and needs no mask (SDPA's causal fast
path); a forward hook on each block reduces its output to the (B, H) mean as the block runs, so
no [layers × batch × tokens × hidden] tensor ever exists. Batches are sized by a token budget.
Results are copied to pinned host memory asynchronously, on a stream of their own so the next
batch's compute never queues behind the copy; the caller consumes them in another thread so the
GPU never waits on disk.

With `shared_first`, a batch whose prompts all start with one token (a LLaMA tokenizer's BOS)
skips it: position 0 attends only to itself, so its state in every layer is the same for every
prompt. It is computed once (with its keys and values), and each batch runs from position 1 with
those keys and values in front of its own; the mean adds the first token's state back in.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer


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


class _FirstToken(DynamicLayer):
    """A cache layer holding the first token's keys and values for a whole batch: each call puts
    them before the batch's own and keeps nothing (memory stays one layer's, as without a cache)."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        super().__init__()
        self.first = (keys, values)  # (1, kv heads, 1, head dim) each
        self.keys, self.values = keys, values  # what the cache's length and mask sizes read
        self.device, self.is_initialized = keys.device, True

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, (k, v) = key_states.shape[0], self.first
        return (
            torch.cat([k.expand(b, -1, -1, -1), key_states], dim=-2),
            torch.cat([v.expand(b, -1, -1, -1), value_states], dim=-2),
        )


class LayerPooler:
    """Mean over tokens of every decoder block's output, for batches of equal-length sequences."""

    def __init__(
        self, model: Any, compile_blocks: bool = False, shared_first: bool = False, overlap_copy: bool = True
    ) -> None:
        self.model = model
        self.base = getattr(model, "model", model)
        self.layers = decoder_layers(model)
        self.device = next(model.parameters()).device
        self.shared_first, self.overlap_copy = shared_first, overlap_copy
        self._out: torch.Tensor | None = None
        self._first: torch.Tensor | None = None  # (L, H) float32: the skipped first token's states
        self._length = 0  # the batch's full length, first token included
        self._primed: dict[int, tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]] = {}
        self._copy: Any = None  # the side stream of the host copies (CUDA)
        self._cache: Any = None  # the cache of a `keep_cache` call, until `_prime` takes it
        self._handles = [layer.register_forward_hook(self._hook(k)) for k, layer in enumerate(self.layers)]
        if compile_blocks:  # fuse each block's norms, rotary and activations; hooks stay outside
            for layer in self.layers:
                layer.compile(dynamic=True)

    def _hook(self, k: int) -> Any:
        def hook(_module: Any, _inp: Any, out: Any) -> None:
            h = out[0] if isinstance(out, tuple) else out
            assert self._out is not None
            if self._first is None:
                self._out[:, k] = h.mean(dim=1, dtype=torch.float32)
            else:  # the batch ran from position 1: the first token's state completes the mean
                self._out[:, k] = (h.sum(dim=1, dtype=torch.float32) + self._first[k]) / self._length

        return hook

    def _prime(self, token: int) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """The first token's state in every layer (L, H) and its keys and values, once per token."""
        if token not in self._primed:
            states = self.pool(torch.tensor([[token]]), keep_cache=True)
            assert self._cache is not None
            kv = [(layer.keys, layer.values) for layer in self._cache.layers]
            self._cache = None
            self._primed[token] = (states[0], kv)
        return self._primed[token]

    def close(self) -> None:
        for h in self._handles:
            h.remove()

    @torch.inference_mode()
    def pool(self, ids: torch.Tensor, keep_cache: bool = False) -> torch.Tensor:
        """ids (B, T) of one length → (B, L, H) float32 on the model's device."""
        b, t = ids.shape
        first = int(ids[0, 0])
        skip = self.shared_first and not keep_cache and t > 1 and bool((ids[:, 0] == first).all())
        prefix = self._prime(first) if skip else None
        self._out = torch.empty(
            b, len(self.layers), self.base.config.hidden_size, device=self.device, dtype=torch.float32
        )
        try:
            if prefix is not None:
                self._first, self._length = prefix[0], t
                cache = DynamicCache()
                cache.layers = [_FirstToken(k, v) for k, v in prefix[1]]
                rest = ids[:, 1:].to(self.device, non_blocking=True)
                self.base(input_ids=rest, cache=cache, use_cache=True)
            else:
                got = self.base(input_ids=ids.to(self.device, non_blocking=True), use_cache=keep_cache)
                self._cache = got.cache if keep_cache else None
            out = self._out
        finally:
            self._out, self._first = None, None
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
                yield PooledBatch(idx, *self._to_host(pooled))
            else:
                yield PooledBatch(idx, pooled, None)

    def _to_host(self, pooled: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """A pinned host copy of `pooled`, under way (its event says when it is done): on a side
        stream, so the next batch's compute is queued at once (`overlap_copy`), else in line."""
        host = torch.empty(pooled.shape, dtype=torch.float16, pin_memory=True)
        event = torch.cuda.Event()
        if not self.overlap_copy:
            host.copy_(pooled, non_blocking=True)
            event.record()
            return host, event
        if self._copy is None:
            self._copy = torch.cuda.Stream(self.device)
        self._copy.wait_stream(torch.cuda.current_stream(self.device))  # pooled is computed
        with torch.cuda.stream(self._copy):
            host.copy_(pooled, non_blocking=True)
            event.record(self._copy)
        pooled.record_stream(self._copy)  # its memory is not reused before the copy is done
        return host, event


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
