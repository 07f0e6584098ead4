"""Golden outputs of the tiny models through the real stages: fixed images and prompts in, the
stored captions, CLIP scores and pooled LLM states out (tests/surd/models/golden/tiny_models.json).

A change that moves any of them (a preprocessing step, the beam search, the pooling, a seed)
fails here and names what moved. After a change that is meant to move them, rewrite the file
with `UPDATE_GOLDEN=1 pytest tests/surd/models/test_golden.py`, and say why in the commit."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest

from storage.embeddings import prompt_sha1
from storage.schemas import OK
from surd import chain
from surd.config import load_settings
from surd.models.profiles import llm_model_id
from surd.sources.replay import synth_image
from surd.stages.base import run_stage
from surd.stages.embed import EmbedStage

GOLDEN = Path(__file__).parent / "golden" / "tiny_models.json"
PROMPTS = [
    "a castle on a hill at sunset, highly detailed, trending on artstation",
    "portrait of a cat wearing a crown, oil painting",
    "a red car in the rain, cinematic lighting, 8k",
    "a bowl of fruit, still life",
    "futuristic city skyline at night, neon, cyberpunk",
    "a dog running on the beach",
]


def compute(root: Path) -> dict[str, Any]:
    settings = load_settings(
        data_root=str(root), profile="tiny", device="cpu", part_size=4, caption={"batch_size": 3}
    )
    data = chain.PIPELINE.data_dir(settings.data_root).open()
    ids = [f"g{i}" for i in range(len(PROMPTS))]
    data.table("raw_items").write(
        [
            {"sample_id": s, "status": OK, "source": "civitai", "source_item_id": s, "complex_prompt": p}
            for s, p in zip(ids, PROMPTS, strict=True)
        ]
    )
    data.table("images").write(
        [{"sample_id": s, "status": OK, "image": synth_image(f"golden-{s}", 160)[0]} for s in ids]
    )
    run_stage(chain.PIPELINE.build("captions", settings, data))
    run_stage(chain.PIPELINE.build("clip_scores", settings, data))
    captions = {r["sample_id"]: r["simple_prompt"] for r in data.table("captions").iter_rows()}
    clip = {
        r["sample_id"]: [round(r["p_simple"], 5), round(r["sim_simple"], 5), round(r["sim_complex"], 5)]
        for r in data.table("clip_scores").iter_rows()
    }
    todo = [(s, captions[s] or "", prompt_sha1(captions[s])) for s in ids]
    embed = EmbedStage(settings, data, None, "tiny", todo)
    run_stage(embed)
    first, _ = embed.store.read_layer(1)
    last, layers = embed.store.read_layer(-1)
    pooled = {s: [round(float(v), 4) for v in [*first[s][:3], *last[s][:3]]] for s in ids}
    return {
        "models": [
            llm_model_id(settings, "tiny"),
            f"tiny-blip(seed={settings.seed})",
            f"tiny-clip(seed={settings.seed})",
        ],
        "layers": layers,
        "captions": captions,
        "clip_p_simple_sim_simple_sim_complex": clip,
        "pooled_layer1_and_last_first3": pooled,
    }


def close(a: Any, b: Any, tol: float) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(float(a), float(b), abs_tol=tol)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k], tol) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y, tol) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def test_tiny_models_give_their_golden_outputs(tmp_path: Path) -> None:
    got = compute(tmp_path / "data")
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
        pytest.skip(f"rewrote {GOLDEN}")
    want = json.loads(GOLDEN.read_text())
    assert got["captions"] == want["captions"]  # token for token
    for key in ("clip_p_simple_sim_simple_sim_complex", "pooled_layer1_and_last_first3"):
        assert close(got[key], want[key], 2e-3), f"{key} moved:\n{got[key]}\n!=\n{want[key]}"
    assert got["layers"] == want["layers"] and got["models"] == want["models"]
