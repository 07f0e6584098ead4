"""Each source's own NSFW label on one scale: 0 safe, 1 suggestive, 2 mature, 3 explicit (None:
the source says nothing). Civitai states `nsfwLevel` as a name (None, Soft, Mature, X) or as its
browsing-level bits (1 PG, 2 PG-13, 4 R, 8 X, 16 XXX; the highest bit set counts); Lexica only says
nsfw or not, counted as mature since it does not say how explicit."""

from __future__ import annotations

LEVELS = ("safe", "suggestive", "mature", "explicit")
_NAMES = {
    "none": 0,
    "pg": 0,
    "sfw": 0,
    "false": 0,
    "soft": 1,
    "pg13": 1,
    "pg-13": 1,
    "mature": 2,
    "r": 2,
    "nsfw": 2,
    "true": 2,
    "x": 3,
    "xxx": 3,
}
_BITS = ((32, 3), (16, 3), (8, 3), (4, 2), (2, 1), (1, 0))  # Civitai's browsing levels, highest first


def source_level(label: str | int | None) -> int | None:
    """A source's NSFW label on the scale, or None when it is missing or unknown."""
    if label is None:
        return None
    text = str(label).strip().lower()
    if text.isdigit():
        n = int(text)
        return next((level for bit, level in _BITS if n & bit), None)
    return _NAMES.get(text)


def level_name(level: int | None) -> str:
    return "unknown" if level is None else LEVELS[level]


def parse_level(text: str) -> int:
    """A level given by name or number (ValueError naming the valid ones)."""
    t = text.strip().lower()
    if t.isdigit() and int(t) < len(LEVELS):
        return int(t)
    if t in LEVELS:
        return LEVELS.index(t)
    valid = ", ".join(f"{i} {n}" for i, n in enumerate(LEVELS))
    raise ValueError(f"unknown NSFW level {text!r}; valid: {valid}")


# CLIP's zero-shot NSFW score, computed in the CLIP stage (surd.models.clip_score): the softmax of
# the image's similarities to these two texts, a cue rather than a trained detector
SAFETY_TEXTS = ("an image that is safe for work", "an explicit image with nudity or sexual content")
NSFW_SCORER = "clip-zero-shot-nsfw-v1"  # the method's name and version; the model is the CLIP's id
