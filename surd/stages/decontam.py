"""Decontamination: training samples whose prompts are the evaluation's, or nearly so, are kept
out of `train` (surd.stages.splits moves their prompt group to `test`, with the reason).

The rule, on the complex and the simple prompt of every sample: both texts are normalised
(Unicode NFKC, case folded, every run of characters that are not letters or digits a single
space), then a prompt matches an evaluation prompt when it is the same normalised text, or when
they share a run of n consecutive words, where n is `release.decontaminate_ngram` (8) or the
evaluation prompt's own length when that is shorter (so a short evaluation prompt, "Giraffes
eating trees.", matches any prompt that contains it whole). The evaluation prompts are the ones the
project evaluates on (adapter.suites: the paper's and ours) and any file of `release.
decontaminate_with` (one prompt a line, the file's stem as the suite's name).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from adapter.suites import suite_texts  # the evaluation's prompts, kept out of its training
from surd.config_keys import SettingsError

WORD = re.compile(r"[^\W_]+")


def words(text: str | None) -> tuple[str, ...]:
    return tuple(WORD.findall(unicodedata.normalize("NFKC", text or "").casefold()))


@dataclass(frozen=True)
class Hit:
    """Which evaluation prompt a text matched, and how (`exact` or `ngram`)."""

    suite: str
    prompt: str
    how: str


class Decontaminator:
    """Finds the evaluation prompt a text matches, by the rule above."""

    def __init__(self, prompts: Mapping[str, Sequence[str]], n: int = 8) -> None:
        self.exact: dict[tuple[str, ...], Hit] = {}
        self.grams: dict[int, dict[tuple[str, ...], Hit]] = {}
        for suite, texts in prompts.items():
            for text in texts:
                w = words(text)
                if not w:
                    continue
                self.exact.setdefault(w, Hit(suite, text, "exact"))
                k = min(n, len(w))
                for i in range(len(w) - k + 1):
                    self.grams.setdefault(k, {}).setdefault(w[i : i + k], Hit(suite, text, "ngram"))

    def match(self, text: str | None) -> Hit | None:
        w = words(text)
        if not w:
            return None
        if w in self.exact:
            return self.exact[w]
        for k, grams in self.grams.items():
            for i in range(len(w) - k + 1):
                hit = grams.get(w[i : i + k])
                if hit is not None:
                    return hit
        return None


def evaluation_prompts(extra: Iterable[Path] = ()) -> dict[str, list[str]]:
    """The project's evaluation suites, and one suite per file of `extra` (named by its stem)."""
    out = {k: list(v) for k, v in suite_texts().items()}
    for path in extra:
        if not path.is_file():
            raise SettingsError(f"release.decontaminate_with: {path} is not a file of prompts")
        out[path.stem] = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return out
