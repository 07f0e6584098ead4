"""The review queue's words, as types: a decision, who made it, and an item's state. Each is a
`StrEnum`, so it is stored and compared as the plain string it stands for."""

from __future__ import annotations

from enum import StrEnum


class Decision(StrEnum):
    ACCEPT = "accept"
    REJECT = "reject"


class ActorKind(StrEnum):
    HUMAN = "human"  # a steward
    AUTO = "auto"  # an auto-review policy (`policy:<name>`)


class State(StrEnum):
    OPEN = "open"  # waiting for the decisions it needs
    FINAL = "final"  # decided: its outcome is what releases take


# Every actor that is not a steward is named `<kind>:<name>`: `policy:` (an auto-review policy),
# `stage:` (a stage that withdrew an item), `takedown:`, `cli:` and `admin:` (who acted from the
# command line or the admin page). A steward's name has no colon, so no account can pass for one
# of them: an accept by `stage:x` would otherwise finalise an audit item alone, for good.
ACTOR_SEPARATOR = ":"


def steward_name_problem(name: str, max_len: int) -> str | None:
    """Why `name` cannot be a steward's (None: it can)."""
    if not name or len(name) > max_len or not name.isprintable() or name != name.strip():
        return f"a steward name is 1–{max_len} printable characters, without spaces at either end"
    if ACTOR_SEPARATOR in name:
        return (
            f"a steward name cannot contain '{ACTOR_SEPARATOR}': names like policy:…, stage:…, "
            "takedown:…, cli:… and admin:… are the pipeline's own actors"
        )
    return None
