"""Duplicate images, decided a part at a time in numpy: exact copies (equal pixels: the sha256 of
the normalised image) and near copies (re-encodes, resizes, small crops).

A near copy is found by one signal and confirmed by a second, independent one:

1. **Candidates**: the 64-bit difference hash (gradient signs, 9×8) within Hamming `max_distance`
   and the mean colour within `max_colour` per channel. The search is exact and sub-quadratic:
   multi-index hashing splits the hash into `bands` so that any hash within the distance lies
   within `radius` of the query in at least one band (pigeonhole: bands·(radius+1) > distance);
   each band keeps buckets as chains in two arrays (`head`, `prev`), so adding is O(1) per hash
   and a query probes a fixed number of buckets whatever the number of hashes.
2. **Confirmation**: the 256-bit DCT hash (low frequencies of the luminance, 32×32) within
   `confirm_distance`. Thresholds: README, "Duplicates", measured by `benchmarks/bench_dedup.py`.

Of several matches, the one first in storage order is named. Images stored before the 256-bit
hash existed (a 22-digit `phash`) cannot confirm: for them the first signal decides, as it did.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MIX = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: a band key → a bucket
MAX_TABLE_BITS = 22  # 4M buckets (32 MB) per band at most
SPARSE = 8  # buckets per stored hash, up to MAX_TABLE_BITS: few wasted candidates per probe


def _popcount(x: np.ndarray) -> np.ndarray:
    return np.bitwise_count(x)


def _words(hexes: list[str], width: int) -> np.ndarray:
    """Hex strings of `width` 64-bit words each → an n×width uint64 array (big-endian words)."""
    raw = np.frombuffer(bytes.fromhex("".join(hexes)), np.uint8).reshape(len(hexes), 8 * width)
    return np.ascontiguousarray(raw).view(">u8").astype(np.uint64).reshape(len(hexes), width)


def _unpack(keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`phash` strings → 64-bit dHash, mean colour (n×3), 256-bit DCT hash (n×4 words), and
    whether it has one (keys of 22 hex digits predate it)."""
    has = np.array([len(k) >= 86 for k in keys], bool)
    dh = _words([k[:16] for k in keys], 1)[:, 0]
    colour = np.frombuffer(bytes.fromhex("".join(k[16:22] for k in keys)), np.uint8).reshape(-1, 3)
    dct = _words([k[22:86] if len(k) >= 86 else "0" * 64 for k in keys], 4)
    return dh, colour.astype(np.int16), dct, has


def plan_bands(max_distance: int, expected: int = 1_000_000) -> tuple[list[int], int]:
    """Band widths and probe radius for an exact search within `max_distance` of 64 bits: the
    split with the least expected work (probes, and candidates at `expected` hashes)."""
    best: tuple[float, list[int], int] | None = None
    for bands in range(1, min(max_distance + 1, 16) + 1):
        radius = math.ceil((max_distance + 1) / bands) - 1
        widths = [64 // bands + (1 if i < 64 % bands else 0) for i in range(bands)]
        probes = sum(sum(math.comb(w, r) for r in range(radius + 1)) for w in widths)
        load = expected / 2 ** min(min(widths), MAX_TABLE_BITS)
        cost = probes * (1 + load)
        if best is None or cost < best[0]:
            best = (cost, widths, radius)
    assert best is not None
    return best[1], best[2]


def _masks(width: int, radius: int) -> np.ndarray:
    """Every value of `width` bits with at most `radius` bits set."""
    out = [0]
    for r in range(1, radius + 1):
        out.extend(sum(1 << b for b in bits) for bits in itertools.combinations(range(width), r))
    return np.array(out, np.uint64)


class _Chains:
    """Buckets of positions by a key: head[bucket] = the newest position, prev[position] = the
    next older one in the same bucket (-1: none). The table doubles (and is refilled from the
    stored keys) when it holds more positions than buckets."""

    def __init__(self, bits: int = 12) -> None:
        self.bits = bits
        self.head = np.full(1 << bits, -1, np.int32)
        self.prev = np.empty(0, np.int32)

    def bucket(self, keys: np.ndarray) -> np.ndarray:
        return ((keys * MIX) >> np.uint64(64 - self.bits)).astype(np.int64)

    def add(self, keys: np.ndarray, start: int, all_keys: np.ndarray) -> None:
        """Add positions start.. start+len(keys); `all_keys` is every stored key (for a refill)."""
        end = start + len(keys)
        if len(self.prev) < end:
            self.prev = np.concatenate(
                [self.prev, np.empty(max(end - len(self.prev), len(self.prev)), np.int32)]
            )
        if end * SPARSE > len(self.head) and self.bits < MAX_TABLE_BITS:
            self.bits = min(MAX_TABLE_BITS, math.ceil(math.log2(end * SPARSE)) + 1)
            self.head = np.full(1 << self.bits, -1, np.int32)
            keys, start = all_keys[:end], 0
        b = self.bucket(keys)
        pos = np.arange(start, start + len(keys), dtype=np.int32)
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


@dataclass(frozen=True)
class Match:
    """The earlier image a new one repeats, and by which signal: `sha256`, or the two hashes'
    distances (`dct256` None where the earlier image has no 256-bit hash)."""

    first: str
    signal: str
    dhash64: int | None = None
    dct256: int | None = None

    def reason(self) -> str:
        if self.signal == "sha256":
            return f"duplicate_of:{self.first}"
        dct = "" if self.dct256 is None else f",dct256={self.dct256}"
        return f"duplicate_of:{self.first}:dhash64={self.dhash64}{dct}"


class Deduper:
    """The kept images so far, in storage order, and the duplicate decision for new ones."""

    def __init__(self, max_distance: int, confirm_distance: int, max_colour: int = 24) -> None:
        self.t, self.confirm, self.max_colour = max_distance, confirm_distance, max_colour
        self.widths, radius = plan_bands(max_distance)
        self.shifts = np.cumsum([0, *self.widths[:-1]]).astype(np.uint64)
        self.masks = [_masks(w, radius) for w in self.widths]
        self.bands = [_Chains() for _ in self.widths]
        self.sha = _Chains()
        self.n = 0
        self.ids = np.empty(0, "S16")
        self.sha_key = np.empty((0, 4), np.uint64)
        self.dh = np.empty(0, np.uint64)
        self.colour = np.empty((0, 3), np.int16)
        self.dct = np.empty((0, 4), np.uint64)
        self.has = np.empty(0, bool)
        self.alive = np.empty(0, bool)  # False: a duplicate, never matched again
        self._batch = 0

    def __len__(self) -> int:
        return self.n

    def _band(self, values: np.ndarray, b: int) -> np.ndarray:
        return (values >> self.shifts[b]) & np.uint64((1 << self.widths[b]) - 1)

    def add(self, ids: Sequence[str], shas: Sequence[str], keys: Sequence[str]) -> None:
        """Keep these images (in storage order) as the earliest of their kind."""
        if not ids:
            return
        dh, colour, dct, has = _unpack(keys)
        sha = _words([s[:64] for s in shas], 4)
        raw = np.array([i.encode() for i in ids])
        start, end = self.n, self.n + len(ids)
        if raw.dtype.itemsize > self.ids.dtype.itemsize:
            self.ids = self.ids.astype(raw.dtype)
        if end > len(self.dh):
            grow = max(end, 2 * len(self.dh), 1024)
            self.ids = np.resize(self.ids, grow)
            self.sha_key = np.resize(self.sha_key, (grow, 4))
            self.dh = np.resize(self.dh, grow)
            self.colour = np.resize(self.colour, (grow, 3))
            self.dct = np.resize(self.dct, (grow, 4))
            self.has = np.resize(self.has, grow)
            self.alive = np.resize(self.alive, grow)
        self.ids[start:end], self.sha_key[start:end] = raw, sha
        self.dh[start:end], self.colour[start:end], self.dct[start:end], self.has[start:end] = (
            dh,
            colour,
            dct,
            has,
        )
        self.alive[start:end] = True
        self.n = end
        self.sha.add(sha[:, 0], start, self.sha_key[:end, 0])
        for b, chains in enumerate(self.bands):
            chains.add(self._band(dh, b), start, self._band(self.dh[:end], b))

    def _exact(self, sha: np.ndarray, start: int) -> tuple[np.ndarray, np.ndarray]:
        """(query, position) of every stored image with the same pixels as a query, before it."""
        owner, pos = self.sha.members(self.sha.bucket(sha[:, 0]), np.arange(len(sha), dtype=np.int64))
        keep = (pos < start + owner) & self.alive[pos]
        owner, pos = owner[keep], pos[keep]
        same = (self.sha_key[pos] == sha[owner]).all(axis=1)
        return owner[same], pos[same]

    def _near(
        self, dh: np.ndarray, colour: np.ndarray, dct: np.ndarray, has: np.ndarray, start: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(query, position) of every stored image before it that both signals agree on."""
        owners, positions = [], []
        q = np.arange(len(dh), dtype=np.int64)
        for b, chains in enumerate(self.bands):
            probes = self._band(dh, b)[:, None] ^ self.masks[b][None, :]
            cur = chains.head[chains.bucket(probes).ravel()]
            owner = np.repeat(q, probes.shape[1])
            keep = cur >= 0
            owner, cur = owner[keep], cur[keep]
            while len(cur):  # walk the buckets, keeping only the hashes within the distance
                hit = _popcount(dh[owner] ^ self.dh[cur]) <= self.t
                owners.append(owner[hit])
                positions.append(cur[hit])
                cur = chains.prev[cur]
                keep = cur >= 0
                owner, cur = owner[keep], cur[keep]
        if not owners:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        owner, pos = np.concatenate(owners), np.concatenate(positions).astype(np.int64)
        ok = (pos < start + owner) & self.alive[pos]
        ok &= (np.abs(colour[owner] - self.colour[pos]) <= self.max_colour).all(axis=1)
        confirmed = _popcount(dct[owner] ^ self.dct[pos]).sum(axis=1) <= self.confirm
        ok &= confirmed | ~(has[owner] & self.has[pos])
        return owner[ok], pos[ok]

    def _match(self, i: int, pos: int, signal: str) -> Match:
        first = self.ids[pos].decode()
        if signal == "sha256":
            return Match(first, "sha256")
        j = self.n - self._batch + i  # i's own position
        dct = int(_popcount(self.dct[j] ^ self.dct[pos]).sum()) if self.has[j] and self.has[pos] else None
        return Match(first, "near", int(_popcount(self.dh[j] ^ self.dh[pos])), dct)

    def decide(self, ids: Sequence[str], shas: Sequence[str], keys: Sequence[str]) -> list[Match | None]:
        """For each new image in order, the first earlier image it repeats (stored, or earlier in
        these and kept), or None. All are added; the repeats as dropped (never matched again)."""
        if not ids:
            return []
        start = self.n
        self.add(ids, shas, keys)
        self._batch = len(ids)
        sha, dh = self.sha_key[start:], self.dh[start:]
        colour, dct, has = self.colour[start : self.n], self.dct[start : self.n], self.has[start : self.n]
        pairs = {
            "sha256": self._exact(sha[: len(ids)], start),
            "near": self._near(dh[: len(ids)], colour, dct, has, start),
        }
        # exact copies before near ones; of either, the first in storage order that is kept
        out: list[Match | None] = [None] * len(ids)
        stored: dict[str, np.ndarray] = {}
        later: dict[int, dict[str, list[int]]] = {}  # matches among these ids: decided in order
        for signal, (owner, pos) in pairs.items():
            before = pos < start
            stored[signal] = _first(owner[before], pos[before], len(ids))
            for i, p in zip(owner[~before].tolist(), pos[~before].tolist(), strict=True):
                later.setdefault(i, {"sha256": [], "near": []})[signal].append(p)
        for i in range(len(ids)):
            if i in later:
                continue
            for signal in ("sha256", "near"):
                if stored[signal][i] >= 0:
                    out[i] = self._match(i, int(stored[signal][i]), signal)
                    self.alive[start + i] = False
                    break
        for i in sorted(later):
            for signal in ("sha256", "near"):
                alive = [p for p in later[i][signal] if self.alive[p]]
                if stored[signal][i] >= 0:
                    alive.append(int(stored[signal][i]))
                if alive:
                    out[i] = self._match(i, min(alive), signal)
                    self.alive[start + i] = False
                    break
        return out


def _first(owner: np.ndarray, pos: np.ndarray, n: int) -> np.ndarray:
    """For each of n queries, the smallest position among its matches (-1: none)."""
    out = np.full(n, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(out, owner, pos)
    out[out == np.iinfo(np.int64).max] = -1
    return out
