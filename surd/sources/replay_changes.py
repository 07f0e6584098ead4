"""How the replay site changes between rebuilds, as the live sites do: new posts at the top of
Civitai's feed (`grow`), items deleted upstream (`delete`: their image answers 404, Civitai's item
lookup answers that it has no such image, listings leave them out), and the faults a source
shows by 2026 (`fault`; ../shared/SOURCES.md, section 5):

| source | fault | what the site answers |
|---|---|---|
| civitai, lexica | `region_blocked` | HTTP 451 `{"code":"REGION_BLOCKED"}` to every API request |
| civitai | `sfw_only` | only safe-for-work items (`nsfwLevel` None), whatever level is asked |
| civitai, lexica | `null_prompts` | every item without its prompt (Civitai's `meta: null`) |
| sdonline | `no_prompts_parsed` | detail pages whose markup changed: no prompt panel or link prompt |
| civitai, lexica, sdonline | `down` | HTTP 503 to every request of the source's pages |

Tests and the replay command drive it; the recorded responses themselves never change."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

FAULTS: dict[str, tuple[str, ...]] = {
    "civitai": ("region_blocked", "sfw_only", "null_prompts", "down"),
    "lexica": ("region_blocked", "null_prompts", "down"),
    "sdonline": ("no_prompts_parsed", "down"),
}
GROWN_FIRST_ID = 90_000_000  # ids of the posts `grow` makes (above every recorded Civitai id)
SUBJECTS = "castle dragon robot forest city portrait cat ship garden knight owl lighthouse".split()
STYLES = "oil painting|watercolor|concept art|digital art|photograph|ink drawing|3d render".split("|")
MOODS = "at dusk|in the rain|at night|in spring|under a red sky|in the fog|at sunrise".split("|")


@dataclass
class Changes:
    """What differs from the recordings now: faults by source, deleted items, grown posts."""

    faults: dict[str, str] = field(default_factory=dict)
    deleted: dict[str, set[str]] = field(default_factory=dict)  # source → item ids
    grown: list[dict[str, Any]] = field(default_factory=list)  # newest first

    def fault(self, source: str, kind: str | None) -> None:
        if source not in FAULTS:
            raise ValueError(f"no source {source!r}; the sources are: {', '.join(FAULTS)}")
        if kind is None:
            self.faults.pop(source, None)
            return
        if kind not in FAULTS[source]:
            raise ValueError(f"{source} shows none of {kind!r}; it shows: {', '.join(FAULTS[source])}")
        self.faults[source] = kind

    def delete(self, source: str, item_ids: list[str]) -> None:
        self.deleted.setdefault(source, set()).update(str(i) for i in item_ids)

    def is_deleted(self, source: str, item_id: Any) -> bool:
        return str(item_id) in self.deleted.get(source, set())

    def grow(self, n: int, prompts: list[str] | None = None) -> list[dict[str, Any]]:
        """`n` new Civitai posts at the top of the feed (or one per given prompt), each with a
        prompt, generation metadata and a picture of its own; returns them."""
        made: list[dict[str, Any]] = []
        for k in range(len(prompts) if prompts is not None else n):
            i = GROWN_FIRST_ID + len(self.grown) + len(made)
            made.append(civitai_post(i, prompts[k] if prompts is not None else invented_prompt(i)))
        self.grown = [*reversed(made), *self.grown]
        return made


def invented_prompt(i: int) -> str:
    """A complex prompt of the kind Civitai's posts carry, different for every `i`."""
    h = int(hashlib.sha256(str(i).encode()).hexdigest(), 16)
    subject, style, mood = SUBJECTS[h % 12], STYLES[(h >> 8) % 7], MOODS[(h >> 16) % 7]
    return f"{subject} {mood}, {style}, highly detailed, {h % 9973} masterpiece, trending on artstation"


def civitai_post(i: int, prompt: str) -> dict[str, Any]:
    """A Civitai `/api/v1/images` item as the API gives it (flat meta), at image id `i`."""
    uuid = hashlib.sha256(f"grown-{i}".encode()).hexdigest()[:32]
    uuid = f"{uuid[:8]}-{uuid[8:12]}-{uuid[12:16]}-{uuid[16:20]}-{uuid[20:]}"
    level = ("None", "None", "None", "Soft", "Mature")[i % 5]
    return {
        "id": i,
        "url": f"https://image.civitai.com/xG1nkqKTMzGDvpLrqFT7WA/{uuid}/width=768/{uuid}.jpeg",
        "width": 768,
        "height": 768,
        "nsfwLevel": level,
        "nsfw": level != "None",
        "createdAt": "2026-12-01T12:00:00.000Z",
        "postId": i // 3,
        "username": f"creator{i % 7}",
        "baseModel": "SD 1.5",
        "meta": {"prompt": prompt, "negativePrompt": "blurry", "seed": i, "steps": 30, "cfgScale": 7},
    }


def image_key(url: str) -> str:
    """The part of an image URL that names its picture (an upload's renditions share it)."""
    segs = [s for s in re.sub(r"^https?://[^/]+", "", url).split("/") if s and "=" not in s]
    return "/".join(segs[-2:]) if len(segs) >= 2 else url


def strip_prompts(html: str) -> str:
    """A detail page as if the site's markup changed: the prompt panel and the editor link's
    prompt are gone (what a parser meets the day the selectors break)."""
    html = re.sub(r"<span[^>]*>\s*Prompt:\s*</span>", "<span>Description</span>", html)
    return re.sub(r"([?&])prompt=[^&\"']*", r"\1p=", html)
