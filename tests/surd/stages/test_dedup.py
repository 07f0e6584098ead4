"""The duplicate index: the same decisions as comparing every pair, a part at a time."""

from __future__ import annotations

import numpy as np
import pytest

from surd.stages.dedup import Deduper, Match, plan_bands


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


@pytest.mark.parametrize(("t", "part"), [(8, 64), (8, 1000), (3, 37), (0, 50), (12, 100)])
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
