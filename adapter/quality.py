"""Image-quality metrics of the paper's Table 3 (CLIP-IQA, MUSIQ, BRISQUE) through pyiqa, and the
significance tests: the paper's t-test for the means of two independent samples (Student's, equal
variances, as scipy's default), and a paired test over the shared seeds (a fair extra).

pyiqa is an optional extra (`pip install 'surd-builder[eval]'`) and its metrics need weights it
downloads on first use; a metric that cannot load is skipped with its reason, never faked.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image

# name → True when higher is better (pyiqa's `lower_better` says the same at run time)
PAPER_METRICS = {"clipiqa": True, "musiq": True, "brisque": False}
Metric = Callable[[Image.Image], float]


def load_metrics(
    names: Sequence[str] = tuple(PAPER_METRICS), device: str = "cpu"
) -> tuple[dict[str, Metric], dict[str, str]]:
    """(metrics that loaded, {metric: why it was skipped})."""
    try:
        import pyiqa
    except ImportError:
        why = "pyiqa is not installed (pip install 'surd-builder[eval]')"
        return {}, dict.fromkeys(names, why)
    import torch
    import torchvision.transforms.functional as TF

    loaded: dict[str, Metric] = {}
    skipped: dict[str, str] = {}
    for name in names:
        try:
            m = pyiqa.create_metric(name, device=device, as_loss=False)
        except Exception as exc:  # a missing weight file or no network: recorded, not raised
            skipped[name] = f"could not load ({type(exc).__name__}: {str(exc)[:160]})"
            continue

        def score(img: Image.Image, m: Any = m) -> float:
            with torch.inference_mode():
                return float(m(TF.to_tensor(img).unsqueeze(0).to(device)).item())

        loaded[name] = score
    return loaded, skipped


def paired_ttest(baseline: Sequence[float], adapter: Sequence[float]) -> dict[str, Any]:
    """Two-sided paired t-test (scipy.stats.ttest_rel) of adapter vs baseline."""
    from scipy import stats

    a, b = np.asarray(adapter, dtype=float), np.asarray(baseline, dtype=float)
    if a.size < 2 or np.allclose(a - b, (a - b)[0]):
        return _result(a, b, None, "fewer than 2 pairs or constant differences: no test")
    return _result(a, b, stats.ttest_rel(a, b))


def independent_ttest(baseline: Sequence[float], adapter: Sequence[float]) -> dict[str, Any]:
    """The paper's test (Table 3): two-sided t-test for the means of two independent samples
    (scipy.stats.ttest_ind, Student's, equal variances) of adapter vs baseline."""
    from scipy import stats

    a, b = np.asarray(adapter, dtype=float), np.asarray(baseline, dtype=float)
    if a.size < 2 or b.size < 2 or (np.ptp(a) == 0 and np.ptp(b) == 0):
        return _result(a, b, None, "fewer than 2 samples a side or no variance: no test")
    return _result(a, b, stats.ttest_ind(a, b))


def _result(a: np.ndarray, b: np.ndarray, res: Any, note: str | None = None) -> dict[str, Any]:
    """A test's summary: sizes and means, and t and p (None, with a note, when there is no test)."""
    p_value = None if res is None or math.isnan(float(res.pvalue)) else float(res.pvalue)
    out: dict[str, Any] = {
        "n": int(a.size),
        "baseline_mean": float(b.mean()) if b.size else None,
        "adapter_mean": float(a.mean()) if a.size else None,
        "t": None if res is None else float(res.statistic),
        "p_value": p_value,
    }
    if note:
        out["note"] = note
    return out


def verdict(p_value: float | None, alpha: float = 0.05) -> str:
    """The paper's reading of a test (Table 3): p > 0.05 is "comparable"."""
    if p_value is None:
        return "no test"
    return f"comparable (p > {alpha:g})" if p_value > alpha else f"differs (p ≤ {alpha:g})"
