"""The duplicate index: the same decisions as comparing every pair, a part at a time."""

from __future__ import annotations

import numpy as np
import pytest

from surd.stages.dedup import KEY, VIEWS, Deduper, Match, plan_bands
from surd.stages.normalise import ZOOMS


def _flip(value: int, bits: int, rng: np.random.Generator, width: int) -> int:
    for b in rng.choice(width, size=bits, replace=False):
        value ^= 1 << int(b)
    return value


def _items(n: int, seed: int) -> list[tuple[str, str, str]]:
    """(id, sha256, phash) with planted exact copies, near copies at every distance 0–12, some
    of them with a far 256-bit hash (a candidate the second signal rejects) and some keys of 22
    digits (written before the 256-bit hash existed)."""
    rng = np.random.default_rng(seed)
    out: list[tuple[str, str, str]] = []
    for k in range(n):
        sample_id = f"{k:016x}"
        roll = rng.random()
        if out and roll < 0.15:
            _, sha, key = out[int(rng.integers(len(out)))]
            out.append((sample_id, sha, key))  # the same pixels
            continue
        sha = bytes(rng.integers(0, 256, 32, dtype=np.uint8)).hex()
        if out and roll < 0.6:
            _, _, base = out[int(rng.integers(len(out)))]
            dh = _flip(int(base[:16], 16), int(rng.integers(0, 13)), rng, 64)
            colour = bytes(
                np.clip(
                    np.frombuffer(bytes.fromhex(base[16:22]), np.uint8) + rng.integers(-30, 31, 3), 0, 255
                ).astype(np.uint8)
            ).hex()
            dct = int(base[22:86] or "0" * 64, 16)
            dct = _flip(dct, int(rng.choice([0, 5, 20, 40, 60, 120])), rng, 256)
            key = f"{dh:016x}{colour}{dct:064x}"
        else:
            key = bytes(rng.integers(0, 256, 43, dtype=np.uint8)).hex()
        if rng.random() < 0.1:
            key = key[:22]
        out.append((sample_id, sha, key))
    return out


def _reference(
    items: list[tuple[str, str, str]], t: int, confirm: int, colour: int = 24
) -> list[Match | None]:
    """Every pair, one item at a time: an exact copy of a kept image, else a near one, the
    first in storage order either way."""
    kept: list[tuple[str, str, str]] = []
    out: list[Match | None] = []
    for ident, sha, key in items:
        found: Match | None = None
        for other, osha, _ in kept:
            if osha == sha:
                found = Match(other, "sha256")
                break
        if found is None:
            for other, _, okey in kept:
                d = bin(int(key[:16], 16) ^ int(okey[:16], 16)).count("1")
                cols = zip(bytes.fromhex(key[16:22]), bytes.fromhex(okey[16:22]), strict=True)
                if d > t or any(abs(a - b) > colour for a, b in cols):
                    continue
                both = len(key) >= 86 and len(okey) >= 86
                e = bin(int(key[22:86], 16) ^ int(okey[22:86], 16)).count("1") if both else None
                if e is None or e <= confirm:
                    found = Match(other, "near", d, e)
                    break
        if found is None:
            kept.append((ident, sha, key))
        out.append(found)
    return out


def _hashes(rng: np.random.Generator, base: tuple[int, int], dh_bits: int, dct_bits: int) -> str:
    """16 + 64 hex digits: a dHash and a DCT hash that many bits from `base`'s."""
    return f"{_flip(base[0], dh_bits, rng, 64):016x}{_flip(base[1], dct_bits, rng, 256):064x}"


def _parts(key: str) -> tuple[tuple[int, int], list[tuple[int, int]]]:
    """A key's whole-image (dHash, DCT hash) and its views'."""
    whole = (int(key[:16], 16), int(key[22:KEY] or "0", 16))
    views = key[KEY:]
    return whole, [
        (int(views[i : i + 16], 16), int(views[i + 16 : i + 80], 16)) for i in range(0, len(views), 80)
    ]


def _cropped_items(n: int, seed: int) -> list[tuple[str, str, str]]:
    """(id, sha256, phash) with views: crops of a kept image (whole hashes near one of its views),
    originals of one (a view near its whole hashes), at every distance around the limits, and
    keys of 86 digits (written before the views)."""
    rng = np.random.default_rng(seed)
    out: list[tuple[str, str, str]] = []
    for k in range(n):
        sha = bytes(rng.integers(0, 256, 32, dtype=np.uint8)).hex()
        colour = bytes(rng.integers(100, 130, 3, dtype=np.uint8)).hex()
        views = [(int(rng.integers(0, 2**63)), int.from_bytes(rng.bytes(32), "big")) for _ in range(VIEWS)]
        whole = (int(rng.integers(0, 2**63)), int.from_bytes(rng.bytes(32), "big"))
        roll = rng.random()
        if out and roll < 0.6:
            base_whole, base_views = _parts(out[int(rng.integers(len(out)))][2])
            dh_bits, dct_bits = int(rng.integers(0, 9)), int(rng.choice([0, 10, 30, 38, 42, 60]))
            v = int(rng.integers(VIEWS))
            if roll < 0.3 and base_views:  # a crop of it: near one of its views
                whole = (
                    _flip(base_views[v][0], dh_bits, rng, 64),
                    _flip(base_views[v][1], dct_bits, rng, 256),
                )
            else:  # its original: one of our views near its whole hashes
                views[v] = (_flip(base_whole[0], dh_bits, rng, 64), _flip(base_whole[1], dct_bits, rng, 256))
        key = f"{whole[0]:016x}{colour}{whole[1]:064x}" + "".join(f"{a:016x}{b:064x}" for a, b in views)
        out.append((f"{k:016x}", sha, key[:KEY] if rng.random() < 0.1 else key))
    return out


def _reference_views(
    items: list[tuple[str, str, str]], t: int, confirm: int, tz: int, confirm_z: int
) -> list[Match | None]:
    """Every pair, one item at a time, whole images then each view both ways, as the module says."""

    def dist(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
        return bin(a[0] ^ b[0]).count("1"), bin(a[1] ^ b[1]).count("1")

    kept: list[tuple[str, str]] = []
    out: list[Match | None] = []
    for ident, _, key in items:
        found: Match | None = None
        whole, views = _parts(key)
        for other, okey in kept:
            if any(
                abs(a - b) > 24
                for a, b in zip(bytes.fromhex(key[16:22]), bytes.fromhex(okey[16:22]), strict=True)
            ):
                continue
            owhole, oviews = _parts(okey)
            d, e = dist(whole, owhole)
            if d <= t and e <= confirm:
                found = Match(other, "near", d, e)
            for v in range(VIEWS):
                if found:
                    break
                for a, b in ([(whole, oviews[v])] if oviews else []) + (
                    [(views[v], owhole)] if views else []
                ):
                    d, e = dist(a, b)
                    if d <= tz and e <= confirm_z:
                        found = Match(other, "near", d, e, ZOOMS[v])
                        break
            if found:
                break
        if found is None:
            kept.append((ident, key))
        out.append(found)
    return out


SLOW = pytest.mark.slow  # more of the same cases: the whole suite runs them, the edit loop one


@pytest.mark.parametrize(
    ("part", "seed"), [(64, 1), pytest.param(1000, 2, marks=SLOW), pytest.param(37, 3, marks=SLOW)]
)
def test_crops_found_both_ways_as_comparing_every_pair(part: int, seed: int) -> None:
    items = _cropped_items(800, seed)
    dedup = Deduper(8, 48, zoom_distance=5, zoom_confirm=40)
    got: list[Match | None] = []
    for lo in range(0, len(items), part):
        chunk = items[lo : lo + part]
        got += dedup.decide(*(list(c) for c in zip(*chunk, strict=True)))
    assert got == _reference_views(items, 8, 48, 5, 40)
    assert sum(m is not None and m.zoom is not None for m in got) > 60


def test_a_crop_reason_names_the_zoom() -> None:
    assert Match("a", "near", 2, 17, 1.08).reason() == "duplicate_of:a:dhash64=2,dct256=17,zoom=1.08"


@pytest.mark.parametrize(
    ("t", "part"),
    [(8, 64), pytest.param(8, 1000, marks=SLOW), (3, 37), pytest.param(0, 50, marks=SLOW), (12, 100)],
)
def test_decisions_equal_comparing_every_pair(t: int, part: int) -> None:
    items = _items(1500, seed=t)
    dedup = Deduper(t, confirm_distance=30)
    got: list[Match | None] = []
    for lo in range(0, len(items), part):
        chunk = items[lo : lo + part]
        got += dedup.decide(*(list(c) for c in zip(*chunk, strict=True)))
    want = _reference(items, t, 30)
    assert got == want
    assert sum(m is not None and m.signal == "near" for m in got) > 10  # the near rule was tried
    assert sum(m is not None and m.signal == "sha256" for m in got) > 50


def test_the_second_signal_keeps_a_candidate_it_does_not_confirm_and_reasons_say_how_close() -> None:
    base = "0123456789abcdef" + "808080"
    dedup = Deduper(8, confirm_distance=20)
    sha = [bytes([i]).hex() * 32 for i in range(4)]
    near = f"{0x0123456789ABCDEF ^ 0b111:016x}808080"
    found = dedup.decide(
        ["a", "b", "c", "d"],
        sha,
        [base + "0" * 64, near + "0" * 60 + "000f", near + "f" * 64, base],
    )
    assert found[0] is None
    assert found[1] == Match("a", "near", 3, 4)
    assert found[1].reason() == "duplicate_of:a:dhash64=3,dct256=4"
    assert found[2] is None  # 256 bits apart: a different picture with a similar gradient
    assert found[3] == Match("a", "near", 0, None)  # a 22-digit key: the first signal decides
    assert dedup.decide(["e"], [sha[0]], [base])[0] == Match("a", "sha256")
    assert Match("a", "sha256").reason() == "duplicate_of:a"


def test_bands_always_cover_the_distance() -> None:
    for t in range(0, 21):
        widths, radius = plan_bands(t)
        assert sum(widths) == 64 and len(widths) * (radius + 1) > t
