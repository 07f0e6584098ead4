"""What the SUR-adapter paper reports, as data (../shared/PAPER.md): its reference figures for SD 1.5
with LLaMA 13B at layer 40 (Tables 2 and 3) and its layer sweep (Table 4), printed beside a run's
own. Its per-prompt accuracies live with the prompts (adapter.suites)."""

from __future__ import annotations

SETUP = "SD 1.5, LLaMA 13B, layer 40, no controlled method"

# (metric, baseline, SUR-adapter, where the paper prints it, the key of our own figure)
REFERENCE: list[tuple[str, float, float, str, str]] = [
    ("CLIP score", 0.498, 0.517, "Table 2", "clip_score"),
    ("Action %", 75.33, 80.67, "Table 2", "action"),
    ("Color %", 81.33, 87.33, "Table 2", "color"),
    ("Counting %", 14.67, 36.67, "Table 2", "counting"),
    ("BRISQUE", 13.85, 14.78, "Table 3, p > 0.05", "brisque"),
    ("CLIP-IQA", 0.686, 0.688, "Table 3, p > 0.05", "clipiqa"),
    ("MUSIQ", 67.38, 67.04, "Table 3, p > 0.05", "musiq"),
    ("user preference %", 48.31, 51.69, "Table 3", "preference"),
]

LAYER_SWEEP = {1: 0.414, 10: 0.502, 20: 0.496, 30: 0.482, 40: 0.517}  # CLIP score by layer, Table 4
OTHER_LLMS = {"LLaMA 7B": 0.494, "LLaMA 33B": 0.523}  # CLIP score, no control, Table 4
SIGNIFICANCE = 0.05  # Table 3 reads p > 0.05 as "quality comparable"
