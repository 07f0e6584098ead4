"""The dataset card of a release: counts in the paper's terms, prompt-length plots (as the
paper's Figure 4), the most frequent words and phrases, licence notes, provenance."""

from __future__ import annotations

import itertools
import json
import re
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa

from surd.sources import LICENCE_NOTES
from surd.summary import counts as counts_text

STOPWORDS = frozenset(
    """a an the of in on at with and to from by for over under is are was were be been it its this that
    these those as or but not no very so into onto up down out off near his her their our your my""".split()
)
_WORD = re.compile(r"[a-z][a-z'-]+")


def words(text: str | None) -> list[str]:
    return _WORD.findall((text or "").lower())


def frequent(texts: list[str | None], n: int = 15) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """Most frequent content words and two-word phrases (stop words left out)."""
    unigrams: Counter[str] = Counter()
    bigrams: Counter[str] = Counter()
    for t in texts:
        ws = [w for w in words(t) if w not in STOPWORDS]
        unigrams.update(ws)
        bigrams.update(f"{a} {b}" for a, b in itertools.pairwise(ws))
    return unigrams.most_common(n), bigrams.most_common(n)


def plot_lengths(simple: list[int], complex_: list[int], path: Path) -> None:
    """Histograms of the words per prompt."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=100)
    top = max([*simple, *complex_, 1])
    bins = range(0, top + 2, max(1, top // 40))
    ax.hist(complex_, bins=bins, alpha=0.6, label="complex prompts")
    ax.hist(simple, bins=bins, alpha=0.6, label="simple prompts (BLIP)")
    ax.set_xlabel("words per prompt")
    ax.set_ylabel("samples")
    ax.set_title("Prompt lengths")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _stats(values: list[int]) -> str:
    return f"mean {statistics.mean(values):.1f}, median {statistics.median(values)}, max {max(values)}"


def _known(rows: pa.Table) -> str:
    """The share of rows each generation column is known for, e.g. `seed 80%, steps 40%`."""
    if not len(rows):
        return "none"
    cols = (
        "seed",
        "steps",
        "cfg_scale",
        "sampler",
        "model_name",
        "model_hash",
        "creator",
        "source_created_at",
    )
    n = len(rows)
    return ", ".join(f"{c} {100 * (n - rows.column(c).null_count) // n}%" for c in cols)


def _commit(code: dict[str, Any] | None) -> str:
    if not code or not code.get("commit"):
        return ""
    return f" at commit {code['commit'][:12]}{' with local changes' if code.get('dirty') else ''}"


def write_card(folder: Path, man: dict[str, Any], rows: pa.Table) -> None:
    """README.md (the dataset card) and its plot, from the manifest and the rows (no images)."""
    simple, complex_ = rows.column("simple_prompt").to_pylist(), rows.column("complex_prompt").to_pylist()
    simple_words, complex_words = [len(words(t)) for t in simple], [len(words(t)) for t in complex_]
    plot_lengths(simple_words, complex_words, folder / "prompt_lengths.png")
    counts = man.get("counts", {})
    by_source = Counter(rows.column("source").to_pylist())
    by_kind = Counter(rows.column("decided_by_kind").to_pylist())
    top_simple, phrases_simple = frequent(simple)
    top_complex, phrases_complex = frequent(complex_)
    fmt = ", ".join
    lines = [
        "---",
        "configs:",
        "- config_name: default",
        "  data_files: shard-*.parquet",
        "---",
        f"# SURD release {man['release']}",
        "",
        f"{man['rows']} samples in {len(man['shards'])} shard(s) of plain Parquet (zstd); parent: "
        f"{man['parent'] or 'none'}; added {len(man['added'])}, removed {len(man['removed'])}, "
        f"changed {len(man.get('changed', []))}.",
        "",
        "## Counts in the paper's terms",
        "",
        "| collected (raw items with a prompt) | images kept | captioned | CLIP-kept | accepted |",
        "|---|---|---|---|---|",
        "| "
        + " | ".join(
            str(counts.get(k, "?")) for k in ("raw_items", "images", "captions", "clip_scores", "accepted")
        )
        + " |",
        "",
        f"Decisions behind the accepted samples: {counts_text(by_kind)} "
        "(`auto` = a named policy, never mixed with stewards' `human` decisions).",
        "",
        "## Per source",
        "",
        *[f"- {s}: {n}" for s, n in sorted(by_source.items())],
        "",
        "## Prompt lengths (words)",
        "",
        "![prompt lengths](prompt_lengths.png)",
        "",
        f"- complex prompts: {_stats(complex_words)}",
        f"- simple prompts: {_stats(simple_words)}",
        "",
        "## Most frequent words and phrases",
        "",
        f"- simple prompts: {fmt(f'{w} ({n})' for w, n in top_simple)}",
        f"- simple prompts, phrases: {fmt(f'{w} ({n})' for w, n in phrases_simple)}",
        f"- complex prompts: {fmt(f'{w} ({n})' for w, n in top_complex)}",
        f"- complex prompts, phrases: {fmt(f'{w} ({n})' for w, n in phrases_complex)}",
        "",
        "## Columns",
        "",
        "`sample_id`, `image` (512×512 JPEG bytes), `simple_prompt` (the steward's edit if any), `caption` "
        "(BLIP's), `complex_prompt`, `negative_prompt`, `source`, `source_item_id`, `source_url`, "
        "`p_simple`, `p_complex` (CLIP), `decision_id`, `decided_by_kind`, `sha256`, `licence_note`; "
        "and how the image was made, as its source states it (null where it does not): `seed` "
        "(int64), `steps` (int32), `cfg_scale` (float32), `sampler`, `gen_width` and `gen_height` "
        "(int32: the size the source states), `model_name`, `model_hash`, `creator` (the name the "
        "site shows), `source_nsfw` (the source's own label, verbatim), `source_created_at` (UTC).",
        "",
        f"Generation parameters known: {_known(rows)}.",
        "",
        "## Licences",
        "",
        *[f"- {LICENCE_NOTES[s]}" for s in sorted(by_source) if s in LICENCE_NOTES],
        "",
        "## Provenance",
        "",
        f"Made by SURD builder {man['code_version']}{_commit(man.get('code'))} (schema "
        f"{man['schema_version']}) with models "
        f"{json.dumps(man['model_ids'])}; the full settings are in `manifest.json`.",
        "",
    ]
    (folder / "README.md").write_text("\n".join(lines))
