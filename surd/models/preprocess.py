"""Stored 512² JPEGs → normalised model inputs, in worker processes that overlap the GPU.

The stored images are already square, so BLIP's processor (resize to 384², bicubic) and
open_clip's (shortest side to 224, bicubic, centre crop) both reduce to one bicubic resize and a
normalisation. JPEG decoding uses Pillow's draft mode, which decodes at a reduced scale that is
still at least the target size.
"""

from __future__ import annotations

import io
import multiprocessing as mp
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.pool import ThreadPool
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image

from surd.parallel import Done, batched, in_order

T = TypeVar("T")

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class Spec:
    size: int
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD


def is_truncated(tokenizer: Any, text: str) -> bool:
    """True when the prompt needs more than the context (start and end tokens included)."""
    context = getattr(tokenizer, "context_length", 77)
    return len(tokenizer.encode(text)) + 2 > context


def to_tensor(data: bytes, spec: Spec) -> torch.Tensor:
    """Decoded and resized (3, size, size) uint8: a quarter of float32's bytes between processes;
    `normalize` finishes the job on the model's device."""
    raw = Image.open(io.BytesIO(data))
    raw.draft("RGB", (spec.size, spec.size))
    img: Image.Image = raw.convert("RGB")
    w, h = img.size
    if w != h:  # not one of ours: centre crop to square first
        s = min(w, h)
        img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    img = img.resize((spec.size, spec.size), Image.Resampling.BICUBIC)
    return torch.from_numpy(np.ascontiguousarray(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)))


def normalize(pixels: torch.Tensor, spec: Spec, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """uint8 batches → the model's normalised input, on its device; float input passes through."""
    if pixels.dtype != torch.uint8:
        return pixels.to(device, dtype, non_blocking=True)
    x = pixels.to(device, non_blocking=True).float().div_(255.0)
    mean = torch.tensor(spec.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=device).view(1, 3, 1, 1)
    return x.sub_(mean).div_(std).to(dtype)


def decode_workers(setting: int | None, device: torch.device) -> int:
    """Decoding processes beside a model: the setting, or by default all cores but one beside a
    GPU and none on CPU (where the model itself wants the cores)."""
    if setting is not None:
        return setting
    return max(1, min(32, (os.cpu_count() or 2) - 1)) if device.type == "cuda" else 0


@dataclass
class Decoded:
    """One chunk or batch out of the workers: pixels, and the prompts' CLIP tokens when asked."""

    pixels: torch.Tensor  # (n, 3, size, size) uint8
    tokens: torch.Tensor | None = None  # (n, k, context) int64: k prompts per item
    truncated: torch.Tensor | None = None  # (n, k) bool: the prompt did not fit the context

    @staticmethod
    def cat(parts: Sequence[Decoded]) -> Decoded:
        if len(parts) == 1:
            return parts[0]
        first = parts[0]
        return Decoded(
            torch.cat([p.pixels for p in parts]),
            None if first.tokens is None else torch.cat([p.tokens for p in parts if p.tokens is not None]),
            None
            if first.truncated is None
            else torch.cat([p.truncated for p in parts if p.truncated is not None]),
        )


Item = tuple[T, bytes, tuple[str, ...]]  # (the caller's key, stored image, prompts to tokenize)

_job: tuple[Spec, Any] | None = None  # set in each worker by _init


def _init(spec: Spec, tokenizer: Any) -> None:
    global _job
    torch.set_num_threads(1)  # one core per worker; the pool is the parallelism
    _job = (spec, tokenizer)


def _init_thread(spec: Spec, tokenizer: Any) -> None:
    global _job
    _job = (spec, tokenizer)


def _decode(chunk: list[tuple[bytes, tuple[str, ...]]]) -> Decoded:
    assert _job is not None, "worker not initialised"
    return decode(chunk, *_job)


def decode(chunk: Sequence[tuple[bytes, tuple[str, ...]]], spec: Spec, tokenizer: Any = None) -> Decoded:
    """Images (and, given a tokenizer, their prompts) of one chunk; what each worker runs."""
    pixels = torch.stack([to_tensor(blob, spec) for blob, _ in chunk])
    if tokenizer is None:
        return Decoded(pixels)
    k = len(chunk[0][1])
    texts = [t for _, prompts in chunk for t in prompts]
    tokens = tokenizer(texts).view(len(chunk), k, -1)
    truncated = torch.tensor([is_truncated(tokenizer, t) for t in texts]).view(len(chunk), k)
    return Decoded(pixels, tokens, truncated)


class Preprocessor:
    """Stored JPEGs (and their prompts) → model inputs, in persistent worker processes.

    Items go to the workers in chunks of `chunk`, with a bounded number in flight, and come back
    in input order; `batches` regroups them into model batches. With workers=0 it all runs
    inline. The pool lives as long as the object (use it as a context manager), so a stage pays
    for its processes once, not once per part. Tensors come back through shared memory.
    """

    def __init__(self, spec: Spec, workers: int, tokenizer: Any = None, chunk: int = 32) -> None:
        self.workers, self.chunk = workers, max(1, chunk)
        self._pool: Any = None
        if workers and mp.current_process().daemon:
            # a daemonic process (a Dask worker, say) may not start processes: threads instead
            # (Pillow releases the GIL while it decodes and resizes)
            self._pool = ThreadPool(workers, initializer=_init_thread, initargs=(spec, tokenizer))
        elif workers:
            ctx = mp.get_context("fork")  # workers inherit the tokenizer; they never touch a GPU
            self._pool = ctx.Pool(workers, initializer=_init, initargs=(spec, tokenizer))
        else:
            self._inline = (spec, tokenizer)

    def __enter__(self) -> Preprocessor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def chunks(self, items: Iterable[Item[T]]) -> Iterator[tuple[list[T], Decoded]]:
        """(keys, decoded) per chunk, in input order; items are read lazily, and at most 4 chunks
        per worker are in flight (surd.parallel.in_order)."""
        pool = self._pool

        def submit(work: list[tuple[bytes, tuple[str, ...]]]) -> Any:
            if pool is None:
                return Done(decode(work, *self._inline))
            return pool.apply_async(_decode, (work,))

        def wait(handle: Any) -> Decoded:
            return handle.result() if isinstance(handle, Done) else handle.get()

        groups = (
            ([k for k, _, _ in group], [(blob, prompts) for _, blob, prompts in group])
            for group in batched(items, self.chunk)
        )
        for (keys, _), decoded in in_order(
            groups, lambda g: submit(g[1]), 4 * max(1, self.workers) if pool else 1, wait
        ):
            yield keys, decoded

    def batches(self, items: Iterable[Item[T]], batch_size: int) -> Iterator[tuple[list[T], Decoded]]:
        """(keys, decoded) per model batch of `batch_size` items (the last may be smaller)."""
        keys: list[T] = []
        parts: list[Decoded] = []
        for k, dec in self.chunks(items):
            keys.extend(k)
            parts.append(dec)
            while len(keys) >= batch_size:
                whole = Decoded.cat(parts)
                yield keys[:batch_size], _slice(whole, 0, batch_size)
                rest = len(keys) - batch_size
                keys = keys[batch_size:]
                parts = [_slice(whole, batch_size, batch_size + rest)] if rest else []
        if keys:
            yield keys, Decoded.cat(parts)


def _slice(d: Decoded, a: int, b: int) -> Decoded:
    return Decoded(
        d.pixels[a:b],
        None if d.tokens is None else d.tokens[a:b],
        None if d.truncated is None else d.truncated[a:b],
    )
