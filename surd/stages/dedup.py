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
   `confirm_distance`. Thresholds: docs/benchmarks.md, "Duplicates", measured by `benchmarks/bench_dedup.py`.

A copy cropped around its centre is a centred enlargement of the original once both are
normalised, too far for the whole-image hashes. Each image also carries both hashes of its centre
enlarged by a few zooms (`normalise.zoom_views`); a new image is compared, within the tighter
`zoom_distance` and `zoom_confirm`, with the kept images' views (it may be their crop) and its own
views with the kept images (it may be their original). The views of every kept image form a second
index of the same bands.

Of several matches, the one first in storage order is named. Images stored before the 256-bit
hash existed (a 22-digit `phash`) cannot confirm: for them the first signal decides, as it did;
images stored before the views (86 digits) are compared whole only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np

from surd.stages.hash_index import Chains, plan_bands, popcount, probe_masks, probe_radius
from surd.stages.normalise import ZOOMS

__all__ = ["Deduper", "Keys", "Match", "plan_bands"]

VIEWS = len(ZOOMS)
KEY = 86  # hex digits of the whole-image hashes; then 80 per view


def _words(hexes: list[str], width: int) -> np.ndarray:
    """Hex strings of `width` 64-bit words each → an n×width uint64 array (big-endian words)."""
    raw = np.frombuffer(bytes.fromhex("".join(hexes)), np.uint8).reshape(len(hexes), 8 * width)
    return np.ascontiguousarray(raw).view(">u8").astype(np.uint64).reshape(len(hexes), width)


@dataclass(frozen=True)
class Keys:
    """Parsed `phash` strings: 64-bit dHash, mean colour (n×3), 256-bit DCT hash (n×4 words), the
    views' dHashes (n×VIEWS) and DCT hashes (n×VIEWS×4), and which keys have a DCT hash and views
    (keys of 22 and 86 hex digits predate them)."""

    dh: np.ndarray
    colour: np.ndarray
    dct: np.ndarray
    vdh: np.ndarray
    vdct: np.ndarray
    has: np.ndarray
    hasv: np.ndarray

    @classmethod
    def parse(cls, keys: Sequence[str]) -> Keys:
        full = KEY + 80 * VIEWS
        has = np.array([len(k) >= KEY for k in keys], bool)
        hasv = np.array([len(k) >= full for k in keys], bool)
        dh = _words([k[:16] for k in keys], 1)[:, 0]
        colour = np.frombuffer(bytes.fromhex("".join(k[16:22] for k in keys)), np.uint8).reshape(-1, 3)
        dct = _words([k[22:KEY] if len(k) >= KEY else "0" * 64 for k in keys], 4)
        views = _words([k[KEY:full] if len(k) >= full else "0" * 80 * VIEWS for k in keys], 5 * VIEWS)
        views = views.reshape(len(keys), VIEWS, 5)
        return cls(dh, colour.astype(np.int16), dct, views[:, :, 0], views[:, :, 1:], has, hasv)


@dataclass(frozen=True)
class Match:
    """The earlier image a new one repeats, and by which signal: `sha256`, or the two hashes'
    distances (`dct256` None where the earlier image has no 256-bit hash) and, for a centre crop,
    the zoom of the view that matched."""

    first: str
    signal: str
    dhash64: int | None = None
    dct256: int | None = None
    zoom: float | None = None

    def reason(self) -> str:
        if self.signal == "sha256":
            return f"duplicate_of:{self.first}"
        dct = "" if self.dct256 is None else f",dct256={self.dct256}"
        zoom = "" if self.zoom is None else f",zoom={self.zoom:g}"
        return f"duplicate_of:{self.first}:dhash64={self.dhash64}{dct}{zoom}"


class _Store:
    """Growable columns of the kept images, in storage order."""

    def __init__(self) -> None:
        self.n = 0
        self.ids = np.empty(0, "S16")
        self.sha = np.empty((0, 4), np.uint64)
        self.dh = np.empty(0, np.uint64)
        self.colour = np.empty((0, 3), np.int16)
        self.dct = np.empty((0, 4), np.uint64)
        self.vdh = np.empty((0, VIEWS), np.uint64)
        self.vdct = np.empty((0, VIEWS, 4), np.uint64)
        self.has = np.empty(0, bool)
        self.hasv = np.empty(0, bool)
        self.alive = np.empty(0, bool)  # False: a duplicate, never matched again

    def append(self, ids: Sequence[str], sha: np.ndarray, k: Keys) -> None:
        raw = np.array([i.encode() for i in ids])
        start, end = self.n, self.n + len(ids)
        if raw.dtype.itemsize > self.ids.dtype.itemsize:
            self.ids = self.ids.astype(raw.dtype)
        if end > len(self.dh):
            grow = max(end, 2 * len(self.dh), 1024)
            for name in ("ids", "sha", "dh", "colour", "dct", "vdh", "vdct", "has", "hasv", "alive"):
                old = getattr(self, name)
                setattr(self, name, np.resize(old, (grow, *old.shape[1:])))
        span = slice(start, end)
        self.ids[span], self.sha[span], self.alive[span] = raw, sha, True
        self.dh[span], self.colour[span], self.dct[span], self.has[span] = k.dh, k.colour, k.dct, k.has
        self.vdh[span], self.vdct[span], self.hasv[span] = k.vdh, k.vdct, k.hasv
        self.n = end


class Deduper:
    """The kept images so far, in storage order, and the duplicate decision for new ones."""

    def __init__(
        self,
        max_distance: int,
        confirm_distance: int,
        max_colour: int = 24,
        zoom_distance: int = 5,
        zoom_confirm: int = 32,
    ) -> None:
        self.t, self.confirm, self.max_colour = max_distance, confirm_distance, max_colour
        self.tz, self.confirm_z = zoom_distance, zoom_confirm
        self.widths = plan_bands(max(max_distance, zoom_distance))[0]  # one split for both searches
        self.shifts = np.cumsum([0, *self.widths[:-1]]).astype(np.uint64)
        self.masks = [probe_masks(w, probe_radius(max_distance, len(self.widths))) for w in self.widths]
        self.masks_z = [probe_masks(w, probe_radius(zoom_distance, len(self.widths))) for w in self.widths]
        self.bands = [Chains(key_bits=w) for w in self.widths]
        self.view_bands = [Chains(key_bits=w) for w in self.widths]  # entry p·VIEWS + v: view v of p
        self.sha = Chains()
        self.s = _Store()
        self._views: dict[tuple[int, int], int] = {}  # (query, position) → view that matched
        self._batch = 0  # images in the part being decided

    def __len__(self) -> int:
        return self.s.n

    def _band(self, values: np.ndarray, b: int) -> np.ndarray:
        return (values >> self.shifts[b]) & np.uint64((1 << self.widths[b]) - 1)

    def add(self, ids: Sequence[str], shas: Sequence[str], keys: Sequence[str]) -> None:
        """Keep these images (in storage order) as the earliest of their kind."""
        if ids:
            self._add(ids, shas, Keys.parse(keys))

    def _add(self, ids: Sequence[str], shas: Sequence[str], k: Keys) -> None:
        s, start = self.s, self.s.n
        s.append(ids, _words([x[:64] for x in shas], 4), k)
        n = s.n
        self.sha.add(s.sha[start:n, 0], start, partial(self._stored, "sha", 0, n))
        for b in range(len(self.widths)):
            self.bands[b].add(self._band(k.dh, b), start, partial(self._stored, "dh", b, n))
            self.view_bands[b].add(  # images without views are not indexed
                self._band(k.vdh.ravel(), b),
                start * VIEWS,
                partial(self._stored, "views", b, n),
                np.repeat(k.hasv, VIEWS),
            )

    def _stored(self, what: str, b: int, n: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Every stored key of an index (and which are valid): read when its table grows."""
        s = self.s
        if what == "sha":
            return s.sha[:n, 0], None
        if what == "dh":
            return self._band(s.dh[:n], b), None
        return self._band(s.vdh[:n].ravel(), b), np.repeat(s.hasv[:n], VIEWS)

    def _exact(self, sha: np.ndarray, start: int) -> tuple[np.ndarray, np.ndarray]:
        """(query, position) of every stored image with the same pixels as a query, before it."""
        owner, pos = self.sha.members(self.sha.bucket(sha[:, 0]), np.arange(len(sha), dtype=np.int64))
        keep = (pos < start + owner) & self.s.alive[pos]
        owner, pos = owner[keep], pos[keep]
        same = (self.s.sha[pos] == sha[owner]).all(axis=1)
        return owner[same], pos[same]

    def _search(
        self, bands: list[Chains], masks: list[np.ndarray], query: np.ndarray, stored: np.ndarray, t: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(query, entry) of every stored hash within `t` bits of a query (some pairs twice)."""
        owners, entries = [], []
        for b, chains in enumerate(bands):
            probes = (self._band(query, b)[:, None] ^ masks[b][None, :]).ravel()
            cur = chains.head[chains.bucket(probes)]
            hit_any = np.flatnonzero(cur >= 0)
            owner, cur = hit_any // len(masks[b]), cur[hit_any]
            while len(cur):  # walk the buckets, keeping only the hashes within the distance
                hit = popcount(query[owner] ^ stored[cur]) <= t
                owners.append(owner[hit])
                entries.append(cur[hit])
                cur = chains.prev[cur]
                keep = cur >= 0
                owner, cur = owner[keep], cur[keep]
        if not owners:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        return np.concatenate(owners), np.concatenate(entries).astype(np.int64)

    def _near(self, k: Keys, start: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(query, position, view) of every kept image before a query that both signals agree on:
        view 0 the whole images, +v the kept image's view v-1, -v the query's view v-1."""
        s, n = self.s, self.s.n
        found = []
        owner, pos = self._search(self.bands, self.masks, k.dh, s.dh[:n], self.t)
        ok = popcount(k.dct[owner] ^ s.dct[pos]).sum(axis=1) <= self.confirm
        found.append((owner, pos, np.zeros_like(pos), ok | ~(k.has[owner] & s.has[pos])))
        owner, entry = self._search(self.view_bands, self.masks_z, k.dh, s.vdh[:n].ravel(), self.tz)
        pos, view = entry // VIEWS, entry % VIEWS
        ok = s.hasv[pos] & k.has[owner]
        ok &= popcount(k.dct[owner] ^ s.vdct[pos, view]).sum(axis=1) <= self.confirm_z
        found.append((owner, pos, view + 1, ok))
        queries = np.flatnonzero(k.hasv)  # every view of those with views, one search
        owner, pos = self._search(self.bands, self.masks_z, k.vdh[queries].ravel(), s.dh[:n], self.tz)
        owner, view = queries[owner // VIEWS], owner % VIEWS
        ok = s.has[pos] & (popcount(k.vdct[owner, view] ^ s.dct[pos]).sum(axis=1) <= self.confirm_z)
        found.append((owner, pos, -view - 1, ok))
        owner, pos, view, ok = (np.concatenate(c) for c in zip(*found, strict=True))
        ok &= (pos < start + owner) & s.alive[pos]
        ok &= (np.abs(k.colour[owner] - s.colour[pos]) <= self.max_colour).all(axis=1)
        owner, pos, view = owner[ok], pos[ok], view[ok]
        self._views = {}
        for i, p, v in zip(owner.tolist(), pos.tolist(), view.tolist(), strict=True):
            if (i, p) not in self._views or abs(v) < abs(self._views[i, p]):
                self._views[i, p] = v  # the whole images first, then the smallest zoom
        return owner, pos, view

    def _match(self, i: int, pos: int, signal: str) -> Match:
        s = self.s
        first = s.ids[pos].decode()
        if signal == "sha256":
            return Match(first, "sha256")
        j = s.n - self._batch + i  # i's own position
        view = self._views[i, pos]
        if view == 0:
            dct = int(popcount(s.dct[j] ^ s.dct[pos]).sum()) if s.has[j] and s.has[pos] else None
            return Match(first, "near", int(popcount(s.dh[j] ^ s.dh[pos])), dct)
        if view > 0:  # i is a crop of the kept image
            a, b = (s.dh[j], s.dct[j]), (s.vdh[pos, view - 1], s.vdct[pos, view - 1])
        else:  # the kept image is a crop of i
            a, b = (s.vdh[j, -view - 1], s.vdct[j, -view - 1]), (s.dh[pos], s.dct[pos])
        dh, dct = int(popcount(a[0] ^ b[0])), int(popcount(a[1] ^ b[1]).sum())
        return Match(first, "near", dh, dct, ZOOMS[abs(view) - 1])

    def decide(self, ids: Sequence[str], shas: Sequence[str], keys: Sequence[str]) -> list[Match | None]:
        """For each new image in order, the first earlier image it repeats (stored, or earlier in
        these and kept), or None. All are added; the repeats as dropped (never matched again)."""
        if not ids:
            return []
        start, k = self.s.n, Keys.parse(keys)
        self._add(ids, shas, k)
        self._batch = len(ids)
        near = self._near(k, start)
        pairs = {"sha256": self._exact(self.s.sha[start : self.s.n], start), "near": near[:2]}
        # exact copies before near ones; of either, the first in storage order that is kept
        alive = self.s.alive
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
                    alive[start + i] = False
                    break
        for i in sorted(later):
            for signal in ("sha256", "near"):
                kept = [p for p in later[i][signal] if alive[p]]
                if stored[signal][i] >= 0:
                    kept.append(int(stored[signal][i]))
                if kept:
                    out[i] = self._match(i, min(kept), signal)
                    alive[start + i] = False
                    break
        return out


def _first(owner: np.ndarray, pos: np.ndarray, n: int) -> np.ndarray:
    """For each of n queries, the smallest position among its matches (-1: none)."""
    out = np.full(n, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(out, owner, pos)
    out[out == np.iinfo(np.int64).max] = -1
    return out
