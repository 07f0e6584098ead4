"""What "never faster than N requests a second" means when it is seen from the server.

The client spaces the moments it sends; the loopback server stamps a request when its handler
thread gets to run, which on a loaded machine can be late by tens of milliseconds. One late stamp
shortens the gap after it by as much as it lengthens the gap before, so a single gap says little;
a pace that is really too fast shortens every span of several requests. The check: for every two
requests i < j, the span between their stamps is at least (j - i) intervals, less the one stated
allowance for a late stamp (SERVER_JITTER_S)."""

from __future__ import annotations

from collections.abc import Sequence

SERVER_JITTER_S = 0.05  # how late a loopback handler may stamp a request on 2 busy cores


def assert_paced(times: Sequence[float], interval_s: float, jitter_s: float = SERVER_JITTER_S) -> None:
    stamps = sorted(times)
    for i in range(len(stamps)):
        for j in range(i + 1, len(stamps)):
            span = stamps[j] - stamps[i]
            floor = (j - i) * interval_s - jitter_s
            assert span >= floor, (
                f"requests {i}..{j} came {span:.3f} s apart, under {floor:.3f} s "
                f"({j - i} intervals of {interval_s} s less {jitter_s} s for a late stamp): {stamps}"
            )
