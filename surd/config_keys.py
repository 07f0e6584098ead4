"""The keys of a settings model: every valid one, its environment variable, what a wrong one was
probably meant to be, and a description of each (for `surd config show --all` and error messages).
Generic over the model (surd.settings.Settings), so the settings module keeps only the settings."""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, SecretStr, ValidationError

ENV_PREFIX = "SURD_"


class SettingsError(ValueError):
    """Bad configuration: the message names the key and the valid options."""


def valid_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys: list[str] = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys.extend(valid_keys(ann, f"{prefix}{name}."))
        else:
            keys.append(f"{prefix}{name}")
    return keys


def env_name(key: str) -> str:
    """`images.size` → `SURD_IMAGES__SIZE`."""
    return ENV_PREFIX + key.upper().replace(".", "__")


def did_you_mean(wrong: str, valid: list[str]) -> str:
    """`; did you mean X?` with the nearest valid names, or a pointer to the full list."""
    near = difflib.get_close_matches(wrong, valid, n=3, cutoff=0.6)
    if near:
        return "; did you mean " + " or ".join(near) + "?"
    return "; `surd config show --all` lists every setting"


def check_env_keys(environ: dict[str, str], keys: list[str], command_variables: dict[str, str]) -> None:
    """Fail on a `SURD_*` variable that names no setting of `keys` (nor a command's own variable)."""
    valid = set(keys)
    sections = {k.split(".")[0] for k in valid if "." in k}
    for var in environ:
        if not var.startswith(ENV_PREFIX) or var in command_variables:
            continue
        key = var[len(ENV_PREFIX) :].lower().replace("__", ".")
        if key not in valid and key not in sections:
            names = [env_name(k) for k in sorted(valid)] + sorted(command_variables)
            raise SettingsError(f"unknown setting {var}" + moved_note(key) + did_you_mean(var, names))


MOVED = {"clip.near_duplicate_at": "near_duplicates.at"}  # keys that moved, and where to


def moved_note(key: str) -> str:
    """` (moved to …)` for a key that moved, else nothing."""
    return f" (moved to {MOVED[key]}, SURD_{MOVED[key].upper().replace('.', '__')})" if key in MOVED else ""


def describe(model: type[BaseModel], prefix: str = "") -> list[dict[str, Any]]:
    """Every setting: its key, environment variable, type, default and description."""
    out = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                walk(ann, f"{prefix}{name}.")
                continue
            default = field.get_default(call_default_factory=True)
            out.append(
                {
                    "key": prefix + name,
                    "env": env_name(prefix + name),
                    "type": getattr(ann, "__name__", None) or str(ann).replace("typing.", ""),
                    "default": default.get_secret_value() if isinstance(default, SecretStr) else default,
                    "description": field.description or "",
                }
            )

    walk(model, prefix)
    return out


def format_error(err: ValidationError, section: str = "") -> str:
    """One line naming each bad key (under `section`) and what is wrong with its value."""
    lines = []
    for e in err.errors():
        loc = ".".join([*([section] if section else []), *(str(p) for p in e["loc"])]) or "settings"
        lines.append(f"{loc}: {e['msg']}")
    return "invalid settings: " + "; ".join(lines)


def unknown_keys(data: dict[str, Any], keys: list[str], prefix: str = "") -> list[str]:
    """The keys of nested `data` that are not settings (`keys`, dotted) nor sections of them."""
    valid = set(keys)
    out = []
    for key, value in data.items():
        dotted = prefix + key
        if dotted in valid:
            continue
        if isinstance(value, dict) and any(k.startswith(dotted + ".") for k in valid):
            out.extend(unknown_keys(value, keys, dotted + "."))
        else:
            out.append(dotted)
    return out
