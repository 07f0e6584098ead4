"""The settings as the pipeline's declaration mounts them: every declared stage's parameters
under its section (`SURD_<SECTION>__<PARAM>`, `[<section>]` in TOML), beside the settings of their
own (surd.settings). What the command line, the flows, the review server and the tests load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from surd import chain
from surd.settings import Settings, build_settings
from surd.settings import describe_settings as describe


def load_settings(
    config_file: Path | None = None, pipeline: chain.Pipeline | None = None, **overrides: Any
) -> Settings:
    """The settings from (lowest first) defaults, a TOML file (`config_file`, else `$SURD_CONFIG`,
    else `./surd.toml`), `SURD_*` variables and `overrides`, with the stages of `pipeline` (default:
    the declaration, surd.chain.PIPELINE) mounted."""
    return build_settings(config_file, (pipeline or chain.PIPELINE).mounts(), **overrides)


def describe_settings(pipeline: chain.Pipeline | None = None) -> list[dict[str, Any]]:
    """Every setting, the declared stages' parameters included: key, variable, type, default and
    description."""
    return describe((pipeline or chain.PIPELINE).mounts())
