"""The offline demo: the replay site, tiny models, an auto-review policy, the whole path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from surd.review import auth, queries, queue
from surd.sources.replay import ReplaySite


def demo_config(data_root: Path, site: ReplaySite) -> dict[str, Any]:
    """Overrides for a run on 2 cores in a few minutes; everything else stays at its default."""
    urls = site.source_urls()
    return {
        "data_root": str(data_root),
        "profile": "tiny",
        "device": "cpu",
        "part_size": 16,
        "crawl": {
            "requests_per_second": 100.0,
            "max_concurrency": 4,
            "backoff_base_s": 0.05,
            "max_retries": 2,
            "contact_url": "https://github.com/surd-builder/surd",
        },
        "sources": {
            # every NSFW level asked (as SURD was built): a safe-only answer is then noticed
            "civitai": {"base_url": urls["civitai"], "page_size": 25, "nsfw": "X"},
            "lexica": {
                "base_url": urls["lexica"],
                "queries": ["game ui", "fruit icons"],
                "requests_per_second": 100.0,
                "image_base_url": f"{site.base_url}/img/lexica",
            },
            "sdonline": {"base_url": urls["sdonline"], "listing_slugs": ["ui-design", "replay"]},
        },
        "images": {"requests_per_second": 100.0},  # the replay site is on loopback
        "caption": {"batch_size": 8},
        # batches of a part each: a kill after two parts leaves two whole batches, and the resume
        # meets the very batches an uninterrupted run makes (so the same scores on any CPU)
        "clip": {"batch_size": 16},
        "review": {"auto_policy": "demo-margin-v1", "auto_min_margin": 0.5},
        # a real LLaMA-architecture model, offline; parts of part_size prompts (16 × 34.5 KB of
        # SmolLM2's vectors is over 512 KiB), so a kill and a resume meet several of them
        "embed": {"llm": "smollm2-135m", "part_bytes": 2**19},
        "adapter": {
            "base_model": "tiny",
            "steps": 20,
            "batch_size": 4,
            "lr": 1e-3,
            "resolution": 32,
            "checkpoint_every": 10,
            "eval_images_per_prompt": 2,
            "eval_steps": 4,
            "log_every": 5,
        },
    }


def demo_login(settings: Any) -> dict[str, Any]:
    """A fresh admin account for the demo's review UI (new password each run), and the open count."""
    import secrets

    engine = queue.connect(settings.review_database_url)
    try:
        password = secrets.token_urlsafe(12)
        auth.add_steward(engine, "steward", password, "admin")
        return {"name": "steward", "password": password, "open": queries.progress(engine)["remaining"]}
    finally:
        engine.dispose()
