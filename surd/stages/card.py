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
import pyarrow.parquet as pq
from huggingface_hub import DatasetCard, DatasetCardData

from storage.schemas import hf_dtype
from surd import chain
from surd.sources import LICENCE_NOTES
from surd.sources.safety import LEVELS, NSFW_SCORER, SAFETY_TEXTS, level_name
from surd.stages.card_sections import changes_text, held_banner, sources_text, splits_text
from surd.stages.card_text import BIAS, COLUMNS, DETECTOR, LIMITATIONS, PAPER_BIBTEX, PERSONAL
from surd.stages.splits import SPLITS
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


def _safety_text(rows: pa.Table, blur_at: float | None = 0.5) -> list[str]:
    """The NSFW note: each level's share of the rows, as the sources label them."""
    if "safety_level" not in rows.column_names or not len(rows):
        return []
    counts = {r["values"]: r["counts"] for r in rows.column("safety_level").value_counts().to_pylist()}
    shares = ", ".join(
        f"{level_name(k)} {counts.get(k, 0)} ({100 * counts.get(k, 0) / len(rows):.1f}%)"
        for k in [*range(len(LEVELS)), None]
    )
    return [
        "## NSFW note",
        "",
        "These are generated images as their sites list them; some are not safe for work. Each row's "
        "`safety_level` is its source's own label on one scale (`source_nsfw` keeps it verbatim); "
        "a source that gives no label leaves it null (a trained detector's score is beside it). Filter "
        "with `surd release export --max-nsfw LEVEL` or on the column.",
        "",
        f"Rows by level: {shares}.",
        "",
        *_detector_text(rows, blur_at),
        *_score_text(rows),
        *_prompt_text(rows),
    ]


def _at_or_above_half(rows: pa.Table, column: str) -> tuple[int, int] | None:
    """(rows at 0.5 or above, rows scored) of a score column; None: no such column or no score."""
    if column not in rows.column_names:
        return None
    scores = [v for v in rows.column(column).to_pylist() if v is not None]
    return (sum(1 for v in scores if v >= 0.5), len(scores)) if scores else None


def _prompt_text(rows: pa.Table) -> list[str]:
    share = _at_or_above_half(rows, "prompt_profanity")
    if share is None:
        return []
    high, n = share
    return [
        "`prompt_profanity` labels each complex prompt with a maintained profanity classifier "
        "(`model_ids.prompt_profanity` in `manifest.json`; word features, so it reads words, not "
        f"meaning). {high} of {n} prompts ({100 * high / n:.1f}%) are at 0.5 or above.",
        "",
    ]


def _detector_text(rows: pa.Table, blur_at: float | None) -> list[str]:
    if "nsfw_detector" not in rows.column_names:
        return []
    scores = [v for v in rows.column("nsfw_detector").to_pylist() if v is not None]
    if not scores:
        return []
    at = 0.5 if blur_at is None else blur_at
    high = sum(1 for v in scores if v >= at)
    return [
        f"{DETECTOR} {high} of {len(scores)} scored rows ({100 * high / len(scores):.1f}%) are at or above "
        f"{at:g}, the score from which the review blurs an image (`review.blur_detector`).",
        "",
    ]


def _score_text(rows: pa.Table) -> list[str]:
    share = _at_or_above_half(rows, "nsfw_score")
    if share is None:
        return []
    high, n = share
    return [
        f'`nsfw_score` is CLIP\'s zero-shot choice between "{SAFETY_TEXTS[0]}" and "{SAFETY_TEXTS[1]}" '
        f"(method `{NSFW_SCORER}`, the CLIP of `model_ids.clip_scores` in `manifest.json`): a cue, "
        f"not a trained detector. {high} of {n} scored rows ({100 * high / n:.1f}%) "
        "are at 0.5 or above.",
        "",
    ]


def _takedown_text(man: dict[str, Any]) -> list[str]:
    """How to have content removed, what happens then, and what this release already left out."""
    contact = (man.get("settings") or {}).get("crawl", {}).get("contact_url") or "the maintainers"
    gone = {sid for sid, r in (man.get("removed_reasons") or {}).items() if r.startswith("takedown:")}
    gone |= set((man.get("held_back") or {}).get("takedown", []))  # accepted, then taken down
    return [
        "## Removing your content",
        "",
        f"Creators and rights holders can ask for an image, a post, or all of a creator's images to be "
        f"removed: write to {contact} with the sample id, the item's URL or your name on the site. "
        "A takedown is recorded with who asked and when. From then on the builder never fetches "
        "that content again, every stage drops it, and the next release leaves it out and lists it "
        "under `removed` in `manifest.json` with the reason; older versions that hold it are deleted "
        "once a release without it exists (`surd release prune`).",
        "",
        f"Taken down since the previous release: {len(gone)} rows.",
        "",
    ]


def _column_rows() -> list[str]:
    """The card's column table: the release's own columns, then each declared stage's."""
    said = COLUMNS | {c.name: c.description for _, c in chain.PIPELINE.release_columns()}
    return [f"| `{f.name}` | {hf_dtype(f)} | {said[f.name]} |" for f in chain.PIPELINE.release_schema()]


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


def size_category(n: int) -> str:
    """Hugging Face's size category of n rows."""
    bounds = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"))
    for bound, name in bounds:
        if n < bound:
            return name
    return "1M<n<10M" if n < 10_000_000 else "n>10M"


def shard_sizes(folder: Path, man: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """{split: (bytes of its data as Arrow reads it, uncompressed; bytes of its shard files)}."""
    out: dict[str, tuple[int, int]] = {}
    for shard in man["shards"]:
        path = folder / shard["file"]
        meta = pq.ParquetFile(path).metadata
        data, files = out.get(shard.get("split", "train"), (0, 0))
        data += sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
        out[shard.get("split", "train")] = (data, files + path.stat().st_size)
    return out


def card_data(man: dict[str, Any], sizes: dict[str, tuple[int, int]] | None = None) -> DatasetCardData:
    """The card's metadata: what the Hub shows and `load_dataset` reads (the image feature, the
    splits and their sizes), with the keys DiffusionDB's card has (who made the annotations and
    the text)."""
    sizes = sizes or {}
    rows = man.get("splits") or {"train": man["rows"]}
    data, files = sum(v[0] for v in sizes.values()), sum(v[1] for v in sizes.values())
    return DatasetCardData(
        pretty_name=f"SURD release {man['release']}",
        license="other",
        license_name="per-source-terms",
        license_link="LICENSE.md",
        annotations_creators=["machine-generated", "expert-generated"],  # BLIP, CLIP; stewards
        language_creators=["found", "machine-generated"],  # the sites' prompts; BLIP's captions
        multilinguality=["monolingual"],
        task_categories=["text-to-image", "image-to-text"],
        task_ids=["image-captioning"],
        language=["en"],
        size_categories=[size_category(man["rows"])],
        source_datasets=["original"],
        tags=["stable-diffusion", "prompts", "sur-adapter", "arxiv:2305.05189"],
        configs=[
            {
                "config_name": "default",
                "data_files": [{"split": s, "path": f"shard-{s}-*.parquet"} for s in SPLITS if s in rows],
            }
        ],
        dataset_info={
            "features": [{"name": f.name, "dtype": hf_dtype(f)} for f in chain.PIPELINE.release_schema()],
            "splits": [
                {"name": s, "num_bytes": sizes.get(s, (0, 0))[0], "num_examples": rows[s]}
                for s in SPLITS
                if s in rows
            ],
            "download_size": files,
            "dataset_size": data,
        },
    )


def _release_stats(folder: Path) -> dict[str, Any] | None:
    f = folder / "stats.json"
    return json.loads(f.read_text()) if f.exists() else None


def _citations(man: dict[str, Any]) -> list[str]:
    """The card's last section: BibTeX of the paper and of this release."""
    year = str(man.get("created_at", ""))[:4] or "2026"
    commit = (man.get("code") or {}).get("commit") or man["code_version"]
    release = (
        f"@misc{{surd_{man['release']},\n  title = {{SURD, release {man['release']}}},\n"
        f"  note  = {{{man['rows']} samples; built by SURD builder at {commit}}},\n  year  = {{{year}}}\n}}"
    )
    head = ["## Citation", "", "The paper whose dataset this rebuilds, and this release:", ""]
    return [*head, "```bibtex", PAPER_BIBTEX, "", release, "```", ""]


def _groups_text(man: dict[str, Any]) -> str:
    """The prompt groups line: how many, the largest, and what the per-group cap held back."""
    g = man.get("prompt_groups") or {}
    cap = man.get("max_per_prompt_group")
    held = sum(len(v) for v in man.get("held_back", {}).values())
    capped = f"at most {cap} per group: {held} held back" if cap else "no cap per group (as the paper)"
    return (
        f"Prompt groups (`prompt_group`: samples made from one complex prompt): {g.get('groups', 0)} "
        f"groups, the largest {g.get('largest', 0)} samples, {g.get('shared', 0)} samples in a group of "
        f"two or more; {capped}."
    )


def _commit(code: dict[str, Any] | None) -> str:
    if not code or not code.get("commit"):
        return ""
    return f" at commit {code['commit'][:12]}{' with local changes' if code.get('dirty') else ''}"


def _counts_text(counts: dict[str, Any]) -> list[str]:
    """The funnel in the paper's terms (the declared stages in order), and what the near-duplicate
    stage dropped."""
    labels = chain.PIPELINE.labels() | {"accepted": "accepted"}
    return [
        "## Counts in the paper's terms",
        "",
        "| " + " | ".join(labels.values()) + " |",
        "|" + "---|" * len(labels),
        "| " + " | ".join(str(counts.get(k, "?")) for k in labels) + " |",
        "",
        f"Near duplicates: {counts.get('near_duplicates_dropped', '?')} CLIP-kept images were dropped as "
        "the same picture as an earlier one (CLIP image-embedding cosine at or above the threshold; "
        "the first in storage order stays; `near_duplicate_of:<sample id>` in the `near_duplicates` "
        "table), before review.",
        "",
    ]


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
        f"# SURD release {man['release']}",
        "",
        *held_banner(man),
        f"{man['rows']} samples in {len(man['shards'])} shard(s) of plain Parquet (zstd); parent: "
        f"{man['parent'] or 'none'}; added {len(man['added'])}, removed {len(man['removed'])}, "
        f"changed {len(man.get('changed', []))}.",
        "",
        *_counts_text(counts),
        f"Decisions behind the accepted samples: {counts_text(by_kind)} "
        "(`auto` = a named policy, never mixed with stewards' `human` decisions).",
        "",
        _groups_text(man),
        "",
        *splits_text(man),
        *changes_text(man),
        *sources_text(_release_stats(folder)),
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
        "| column | type | what it holds |",
        "|---|---|---|",
        *_column_rows(),
        "",
        f"Generation parameters known: {_known(rows)}.",
        "",
        "## Licences",
        "",
        *[f"- {LICENCE_NOTES[s]}" for s in sorted(by_source) if s in LICENCE_NOTES],
        "",
        *_safety_text(rows, ((man.get("settings") or {}).get("review") or {}).get("blur_detector", 0.5)),
        *PERSONAL,
        *BIAS,
        *LIMITATIONS,
        *_takedown_text(man),
        "## Provenance",
        "",
        f"Made by SURD builder {man['code_version']}{_commit(man.get('code'))} (schema "
        f"{man['schema_version']}) with models "
        f"{json.dumps(man['model_ids'])}; the full settings are in `manifest.json`.",
        "",
        *_citations(man),
    ]
    (folder / "LICENSE.md").write_text(
        "# Terms of the images in this release\n\nEach row's `licence_note` names its source's terms:\n\n"
        + "".join(f"- {LICENCE_NOTES[s]}\n" for s in sorted(by_source) if s in LICENCE_NOTES)
    )
    card = DatasetCard(f"---\n{card_data(man, shard_sizes(folder, man)).to_yaml()}\n---\n" + "\n".join(lines))
    card.save(folder / "README.md")
