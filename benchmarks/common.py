"""Shared by the benchmark scripts: device, timing, the card's measured bf16 matmul rate, output."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from storage.torch_compat import install  # noqa: E402

install()

import torch  # noqa: E402


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], repeat: int = 1) -> float:
    """Seconds per call (device synchronised around it)."""
    sync()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    sync()
    return (time.perf_counter() - t0) / repeat


def matmul_tflops(n: int = 8192) -> float | None:
    """The card's measured bf16 matmul rate (random data, median of 10 after warm-up)."""
    if not torch.cuda.is_available():
        return None
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    times = sorted(timed(lambda: a @ b) for _ in range(10))
    return 2 * n**3 / times[5] / 1e12


def card() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"CPU ({torch.get_num_threads()} threads)"


def report(result: dict[str, Any], out: Path | None = None) -> None:
    result = {"card": card(), "torch": torch.__version__, **result}
    line = json.dumps(result)
    print(line, flush=True)
    if out is not None:
        with out.open("a") as fh:
            fh.write(line + "\n")


def peak_gb() -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
