"""The reviewing guidelines: a Markdown file named in the settings (`review.guidelines`), shown on
the review pages and in the API. Its version is what its front matter says (`version: 3` between
`---` lines at the top), else the first 12 hex digits of its sha256; every decision records the
version it was made under, and the admin page shows agreement per version."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from markdown_it import MarkdownIt

_FRONT = re.compile(r"\A---\s*\n(.*?)\n---\s*\n", re.S)
_cache: dict[tuple[str, int, int], Guidelines] = {}


@dataclass(frozen=True)
class Guidelines:
    version: str
    markdown: str  # without the front matter
    html: str  # rendered with raw HTML off: the file cannot inject markup


def load(path: Path | None) -> Guidelines | None:
    """The guidelines in force (re-read when the file changes), or None when none are set."""
    if path is None:
        return None
    p = Path(path)
    st = p.stat()  # FileNotFoundError when the setting names no file: a configuration error
    key = (str(p.resolve()), st.st_mtime_ns, st.st_size)
    if key not in _cache:
        text = p.read_text()
        front = _FRONT.match(text)
        body = text[front.end() :] if front else text
        stated = re.search(r"^version:\s*(\S.*?)\s*$", front.group(1), re.M) if front else None
        version = stated.group(1)[:64] if stated else "sha-" + hashlib.sha256(text.encode()).hexdigest()[:12]
        html = MarkdownIt("commonmark", {"html": False, "linkify": False}).render(body)
        _cache[key] = Guidelines(version, body, html)
    return _cache[key]


def version(path: Path | None) -> str | None:
    """The version of the guidelines in force, which each decision records (None: none set)."""
    g = load(path)
    return g.version if g else None
