"""Exact search of 64-bit hashes within a Hamming distance: multi-index hashing in numpy.

A hash within `t` bits of a query lies within `radius` of it in at least one of `bands` bands
(pigeonhole: bands·(radius+1) > t). Each band keeps buckets as chains in two arrays (`Chains`), so
adding is O(1) per hash and a query probes a fixed number of buckets (`masks`) whatever the
number of stored hashes. Used by surd.stages.dedup.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np

MIX = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: a band key → a bucket
MAX_TABLE_BITS = 22  # 4M buckets (32 MB) per band at most
SPARSE = 4  # buckets per stored hash (at least), up to MAX_TABLE_BITS: few wasted candidates


def popcount(x: np.ndarray) -> np.ndarray:
    return np.bitwise_count(x)


def plan_bands(max_distance: int, expected: int = 1_000_000) -> tuple[list[int], int]:
    """Band widths and probe radius for an exact search within `max_distance` of 64 bits: the
    split with the least expected work (probes, and candidates at `expected` hashes)."""
    best: tuple[float, list[int], int] | None = None
    for bands in range(1, min(max_distance + 1, 16) + 1):
        radius = probe_radius(max_distance, bands)
        widths = [64 // bands + (1 if i < 64 % bands else 0) for i in range(bands)]
        probes = sum(sum(math.comb(w, r) for r in range(radius + 1)) for w in widths)
        load = expected / 2 ** min(min(widths), MAX_TABLE_BITS)
        cost = probes * (1 + load)
        if best is None or cost < best[0]:
            best = (cost, widths, radius)
    assert best is not None
    return best[1], best[2]


def probe_radius(distance: int, bands: int) -> int:
    """The probe radius that finds every hash within `distance` over `bands` bands (pigeonhole)."""
    return math.ceil((distance + 1) / bands) - 1


def probe_masks(width: int, radius: int) -> np.ndarray:
    """Every value of `width` bits with at most `radius` bits set."""
    out = [0]
    for r in range(1, radius + 1):
        out.extend(sum(1 << b for b in bits) for bits in itertools.combinations(range(width), r))
    return np.array(out, np.uint64)


class Chains:
    """Buckets of positions by a key: head[bucket] = the newest position, prev[position] = the
    next older one in the same bucket (-1: none). The table grows (and is refilled from the
    stored keys) to keep SPARSE buckets per position, up to MAX_TABLE_BITS."""

    def __init__(self, bits: int = 12, key_bits: int = 64) -> None:
        self.bits, self.key_bits = bits, key_bits
        self.head = np.full(1 << bits, -1, np.int32)
        self.prev = np.empty(0, np.int32)

    def bucket(self, keys: np.ndarray) -> np.ndarray:
        if self.key_bits <= self.bits:  # the key itself: no two keys share a bucket
            return keys.astype(np.int64)
        return ((keys * MIX) >> np.uint64(64 - self.bits)).astype(np.int64)

    def add(
        self,
        keys: np.ndarray,
        start: int,
        stored: Callable[[], tuple[np.ndarray, np.ndarray | None]],
        valid: np.ndarray | None = None,
    ) -> None:
        """Add positions start.. start+len(keys), but those not `valid`; `stored()` gives every
        stored key and which are valid (read only for a refill)."""
        end = start + len(keys)
        if len(self.prev) < end:
            self.prev = np.concatenate(
                [self.prev, np.empty(max(end - len(self.prev), len(self.prev)), np.int32)]
            )
        if end * SPARSE > len(self.head) and self.bits < MAX_TABLE_BITS:
            self.bits = min(MAX_TABLE_BITS, math.ceil(math.log2(end * SPARSE)))
            self.head = np.full(1 << self.bits, -1, np.int32)
            (keys, valid), start = stored(), 0
        b = self.bucket(keys)
        pos = np.arange(start, start + len(keys), dtype=np.int32)
        if valid is not None:
            b, pos = b[valid], pos[valid]
        if not len(b):
            return
        order = np.lexsort((pos, b))  # by bucket, then position
        b, pos = b[order], pos[order]
        first = np.r_[True, b[1:] != b[:-1]]
        last = np.r_[b[1:] != b[:-1], True]
        older = np.empty_like(pos)
        older[1:] = pos[:-1]
        older[first] = self.head[b[first]]
        self.prev[pos] = older
        self.head[b[last]] = pos[last]

    def members(self, buckets: np.ndarray, owner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(owner, position) for every position in the given buckets."""
        cur = self.head[buckets]
        keep = cur >= 0
        owner, cur = owner[keep], cur[keep]
        owners, positions = [], []
        while len(cur):
            owners.append(owner)
            positions.append(cur)
            cur = self.prev[cur]
            keep = cur >= 0
            owner, cur = owner[keep], cur[keep]
        if not owners:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        return np.concatenate(owners), np.concatenate(positions)
