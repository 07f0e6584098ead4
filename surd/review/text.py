"""An edited simple prompt as it may enter a release: one rule for the web form and the API."""

from __future__ import annotations

import re
import unicodedata

MAX_PROMPT = 500
# bidi embeddings, overrides and isolates, and the invisible direction marks: they can make a
# prompt read differently from what it holds (Trojan Source), and a caption never needs them
_BIDI = dict.fromkeys(map(ord, "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"))
_SPACE = re.compile(r"[\t\n\r\v\f ]+")


def hidden_characters(text: str, allow: str = "") -> bool:
    """Whether `text` holds a control or formatting character (NUL, a right-to-left override, a
    zero-width joiner, …) other than those in `allow`: text stored for people to read holds none."""
    return any(unicodedata.category(c) in ("Cc", "Cf") and c not in allow for c in text)


def clean_prompt(text: str | None) -> str | None:
    """Bidi controls removed, runs of whitespace made one space, ends stripped; None when empty.
    ValueError, with the message a steward sees, for NUL or other control characters and for a
    prompt over MAX_PROMPT characters."""
    if text is None:
        return None
    cleaned = _SPACE.sub(" ", text.translate(_BIDI)).strip()
    bad = sorted({f"U+{ord(c):04X}" for c in cleaned if unicodedata.category(c) == "Cc"})
    if bad:
        raise ValueError(f"the prompt holds control characters ({', '.join(bad[:3])}): remove them")
    if len(cleaned) > MAX_PROMPT:
        raise ValueError(f"the prompt has {len(cleaned)} characters; at most {MAX_PROMPT}")
    return cleaned or None
