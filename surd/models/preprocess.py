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


def tokenize(tokenizer: Any, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens (n, context), whether each prompt was cut to fit). open_clip's BPE tokenizer
    encodes each prompt once here, its tokens laid out as its own `__call__` lays them out (start,
    the prompt, end; cut to the context with the end token last); any other tokenizer is called
    and each prompt encoded again to tell whether it was cut."""
    context = getattr(tokenizer, "context_length", None)
    sot, eot = getattr(tokenizer, "sot_token_id", None), getattr(tokenizer, "eot_token_id", None)
    own = type(tokenizer).__name__ == "SimpleTokenizer" and getattr(tokenizer, "reduction_fn", None) is None
    if not (own and context and sot is not None and eot is not None):
        return tokenizer(texts), torch.tensor([is_truncated(tokenizer, t) for t in texts], dtype=torch.bool)
    out = np.zeros((len(texts), context), dtype=np.int64)
    cut = np.zeros(len(texts), dtype=bool)
    for i, text in enumerate(texts):
        ids = [sot, *tokenizer.encode(text), eot]
        if len(ids) > context:
            cut[i] = True
            ids = [*ids[: context - 1], eot]
        out[i, : len(ids)] = ids
    return torch.from_numpy(out), torch.from_numpy(cut)


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


def resize_batch(images: torch.Tensor, size: int) -> torch.Tensor:
    """(n, 3, h, w) uint8 on any device → (n, 3, size, size) uint8: centre-cropped square, then
    bicubic with antialiasing (what Pillow's resize does, up to rounding), on that device."""
    h, w = images.shape[-2:]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    square = images[..., top : top + s, left : left + s]
    if s == size:
        return square.contiguous()
    x = torch.nn.functional.interpolate(
        square.float(), size=(size, size), mode="bicubic", antialias=True, align_corners=False
    )
    return x.round_().clamp_(0, 255).to(torch.uint8)


def device_pixels(blobs: Sequence[bytes], spec: Spec, device: torch.device) -> torch.Tensor:
    """Stored JPEGs decoded on `device` (torchvision's batched decode_jpeg: nvJPEG on a GPU) and
    resized there: (n, 3, size, size) uint8. Not bit-identical to the Pillow path (`to_tensor`):
    Pillow decodes at a reduced DCT scale first (draft mode)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    data = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs]
    images = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    shapes = {tuple(i.shape) for i in images}
    if len(shapes) == 1:
        return resize_batch(torch.stack(images), spec.size)
    return torch.cat([resize_batch(i[None], spec.size) for i in images])


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

    pixels: torch.Tensor  # (n, 3, size, size) uint8; (0,) when the images are left undecoded
    tokens: torch.Tensor | None = None  # (n, k, context) int64: k prompts per item
    truncated: torch.Tensor | None = None  # (n, k) bool: the prompt did not fit the context
    blobs: list[bytes] | None = None  # the stored images themselves, for a decode on the device

    def on(self, spec: Spec, device: torch.device) -> torch.Tensor:
        """The pixels: decoded by the workers, or now on `device` (`device_pixels`)."""
        return self.pixels if self.blobs is None else device_pixels(self.blobs, spec, device)

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
            None if first.blobs is None else [b for p in parts for b in p.blobs or ()],
        )


Item = tuple[T, bytes, tuple[str, ...]]  # (the caller's key, stored image, prompts to tokenize)

_job: tuple[Spec, Any, bool] | None = None  # set in each worker by _init


def _init(spec: Spec, tokenizer: Any, pixels: bool = True) -> None:
    global _job
    torch.set_num_threads(1)  # one core per worker; the pool is the parallelism
    _job = (spec, tokenizer, pixels)


def _init_thread(spec: Spec, tokenizer: Any, pixels: bool = True) -> None:
    global _job
    _job = (spec, tokenizer, pixels)


def _decode(chunk: list[tuple[bytes, tuple[str, ...]]]) -> Decoded:
    assert _job is not None, "worker not initialised"
    return decode(chunk, *_job)


def decode(
    chunk: Sequence[tuple[bytes, tuple[str, ...]]], spec: Spec, tokenizer: Any = None, pixels: bool = True
) -> Decoded:
    """Images (and, given a tokenizer, their prompts) of one chunk; what each worker runs. With
    `pixels` off the images stay as stored, for the model's device to decode (`Decoded.on`)."""
    blobs = None if pixels else [blob for blob, _ in chunk]
    px = (
        torch.stack([to_tensor(blob, spec) for blob, _ in chunk])
        if pixels
        else torch.empty(0, dtype=torch.uint8)
    )
    if tokenizer is None:
        return Decoded(px, blobs=blobs)
    k = len(chunk[0][1])
    texts = [t for _, prompts in chunk for t in prompts]
    tokens, truncated = tokenize(tokenizer, texts)  # each prompt encoded once
    return Decoded(px, tokens.view(len(chunk), k, -1), truncated.view(len(chunk), k), blobs)


class Preprocessor:
    """Stored JPEGs (and their prompts) → model inputs, in persistent worker processes.

    Items go to the workers in chunks of `chunk`, with a bounded number in flight, and come back
    in input order; `batches` regroups them into model batches. With workers=0 it all runs
    inline. The pool lives as long as the object (use it as a context manager), so a stage pays
    for its processes once, not once per part. Tensors come back through shared memory.
    """

    def __init__(
        self, spec: Spec, workers: int, tokenizer: Any = None, chunk: int = 32, pixels: bool = True
    ) -> None:
        self.workers, self.chunk = workers, max(1, chunk)
        self._pool: Any = None
        if workers and mp.current_process().daemon:
            # a daemonic process (a Dask worker, say) may not start processes: threads instead
            # (Pillow releases the GIL while it decodes and resizes)
            self._pool = ThreadPool(workers, initializer=_init_thread, initargs=(spec, tokenizer, pixels))
        elif workers:
            ctx = mp.get_context("fork")  # workers inherit the tokenizer; they never touch a GPU
            self._pool = ctx.Pool(workers, initializer=_init, initargs=(spec, tokenizer, pixels))
        else:
            self._inline = (spec, tokenizer, pixels)

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
        None if d.blobs is None else d.blobs[a:b],
    )
