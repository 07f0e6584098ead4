"""Stable identifiers: a sample id never changes across rebuilds."""

from __future__ import annotations

import hashlib
import re

_WS = re.compile(r"\s+")


def sample_id(source: str, source_item_id: str) -> str:
    """16 hex chars derived from (source, source item id) only."""
    return hashlib.sha1(f"{source}\x1f{source_item_id}".encode()).hexdigest()[:16]


def normalise_prompt(text: str | None) -> str:
    """Trim and collapse whitespace; weights like `(word:1.2)` and `<lora:x:1>` stay verbatim."""
    if not text:
        return ""
    text = _WS.sub(" ", text).strip()
    return re.sub(r"\s+,", ",", text)
