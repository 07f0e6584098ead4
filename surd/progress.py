"""Progress of a long stage as numbers a person can act on: done of total, rate, ETA.

A `Meter` counts (thread-safe: stages report from writer threads too); `ProgressLog` writes its
line every `interval` seconds from a background thread, for runs without a terminal (cron,
worker logs, Prefect), so a stage busy in one long model call still shows it is alive. The CLI
draws the same line on a terminal (surd.app.cli.progress).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType

RATE_WINDOW_S = 30.0  # the rate is measured over the last half minute, so the ETA follows changes


def duration(seconds: float) -> str:
    s = round(seconds)
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}"


class Meter:
    """Items done of a total (when known), their rate, the ETA, and what the stage waits on."""

    def __init__(
        self,
        label: str,
        total: int | None = None,
        unit: str = "items",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label, self.total, self.unit, self.clock = label, total, unit, clock
        self.done = 0
        self.steps = 0  # calls of advance: pages, for a crawl
        self.waiting: str | None = None
        self.started = clock()
        self._samples: deque[tuple[float, int]] = deque([(self.started, 0)])
        self._lock = threading.Lock()

    def advance(self, n: int) -> None:
        with self._lock:
            self.done += n
            self.steps += 1
            self.waiting = None
            now = self.clock()
            self._samples.append((now, self.done))
            while len(self._samples) > 2 and now - self._samples[1][0] > RATE_WINDOW_S:
                self._samples.popleft()

    def wait(self, what: str | None) -> None:
        """Say what the stage is waiting on (None: no longer waiting)."""
        with self._lock:
            self.waiting = what

    def rate(self) -> float | None:
        """Items per second over the recent window; None before anything is done."""
        with self._lock:
            t0, n0 = self._samples[0]
            now, done = self.clock(), self.done
        if done == n0:
            return None if done == 0 else done / max(now - self.started, 1e-9)
        return (done - n0) / max(now - t0, 1e-9)

    def eta(self) -> float | None:
        rate = self.rate()
        if self.total is None or not rate:
            return None
        return max(self.total - self.done, 0) / rate

    def line(self, steps_unit: str | None = None) -> str:
        parts = [
            f"{self.done}/{self.total} {self.unit}" if self.total is not None else f"{self.done} {self.unit}"
        ]
        if self.total:
            parts[0] += f" ({100 * self.done / self.total:.0f}%)"
        if steps_unit:
            parts.insert(0, f"{self.steps} {steps_unit}")
        rate = self.rate()
        parts.append(f"{rate:.1f} {self.unit}/s" if rate is not None else f"-- {self.unit}/s")
        if self.total is not None:
            eta = self.eta()
            parts.append(f"ETA {duration(eta)}" if eta is not None else "ETA --")
        parts.append(f"elapsed {duration(self.clock() - self.started)}")
        line = f"{self.label}: " + ", ".join(parts)
        if self.waiting:
            line += f"; {self.waiting}"
        return line


class ProgressLog:
    """Log `meter.line()` every `interval` seconds while the block runs, and once at its end."""

    def __init__(
        self, meter: Meter, log: Callable[[str], None], interval: float, steps_unit: str | None = None
    ) -> None:
        self.meter, self.log, self.interval, self.steps_unit = meter, log, interval, steps_unit
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="progress-log", daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.log(self.meter.line(self.steps_unit))

    def __enter__(self) -> ProgressLog:
        if self.interval > 0:
            self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if kind is None and self.interval > 0:
            self.log(self.meter.line(self.steps_unit))
