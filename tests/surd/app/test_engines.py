"""`flows/` plugs into the command line through entry points (surd.app.engines): the application
layer finds the Prefect engine and the `deploy` commands without importing `flows/`."""

from __future__ import annotations

import pytest
import typer

from surd.app.cli.errors import Exit, classify
from surd.app.engines import EngineMissing, add_commands, engine


def test_the_prefect_engine_is_found_through_its_entry_point() -> None:
    from flows.commands import rebuild

    assert engine("prefect") is rebuild


def test_a_missing_engine_is_a_usage_error_naming_the_way_out() -> None:
    with pytest.raises(EngineMissing) as err:
        engine("nope")
    code, line = classify(err.value) or (None, "")
    assert code is Exit.USAGE and "--engine local" in line and "pip install -e ." in line


def test_the_deploy_commands_are_plugged_in() -> None:
    app = typer.Typer()
    add_commands(app)
    assert [g.name for g in app.registered_groups] == ["deploy"]
    deploy = app.registered_groups[0].typer_instance
    assert deploy is not None
    assert sorted(c.name or "" for c in deploy.registered_commands) == ["render", "serve", "setup", "worker"]
