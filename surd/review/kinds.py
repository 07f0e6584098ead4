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
