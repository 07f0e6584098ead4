"""The LAVIS caption backend: LAVIS in its own venv (`make lavis-env`), the main install untouched.

`.ci/run` builds that venv and sets CI_REQUIRE_LAVIS=1, so there this test must run; on a
machine without the venv it is skipped with the command that builds it."""

from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path

import pytest

from storage.layout import DataDir
from storage.schemas import OK
from surd.replay import synth_image
from surd.settings import load_settings

LAVIS_PY = Path(__file__).resolve().parent.parent / ".venv-lavis" / "bin" / "python"


@pytest.fixture
def lavis_python() -> Path:
    if not LAVIS_PY.exists():
        if os.environ.get("CI_REQUIRE_LAVIS") == "1":
            pytest.fail("CI_REQUIRE_LAVIS=1 but .venv-lavis is missing: make lavis-env")
        pytest.skip("LAVIS' own venv is not built here: make lavis-env")
    return LAVIS_PY


def test_the_main_install_has_no_lavis_and_a_modern_transformers() -> None:
    import transformers

    assert importlib.util.find_spec("lavis") is None
    assert int(transformers.__version__.split(".")[0]) >= 5


def test_lavis_venv_is_its_own_and_its_captioner_fills_the_table(lavis_python: Path, tmp_path: Path) -> None:
    versions = subprocess.run(
        [
            str(lavis_python),
            "-c",
            "import transformers, numpy; print(transformers.__version__, numpy.__version__)",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert versions[0].startswith("4.26") and versions[1].startswith("1.")  # LAVIS' pins, in its venv only

    from surd.caption import run_captions

    data = DataDir(tmp_path / "data").open()
    rows = []
    for i in range(3):
        row = dict.fromkeys(data.table("images").schema.names)
        row.update(sample_id=f"s{i}", status=OK, image=synth_image(f"k{i}", 64)[0])
        rows.append(row)
    data.table("images").write(rows)
    settings = load_settings(
        data_root=tmp_path / "data",
        profile="tiny",
        device="cpu",
        caption={
            "backend": "lavis",
            "lavis_python": str(lavis_python),
            "num_beams": 2,
            "max_length": 12,
            "min_length": 5,
        },
    )
    run = run_captions(settings, data)
    assert run.processed == 3
    got = data.table("captions").read().to_pylist()
    assert {r["sample_id"] for r in got} == {"s0", "s1", "s2"}
    assert all(r["model_id"] == "lavis:blip_caption/base_coco (random weights)" for r in got)
    assert all((r["status"] == OK) == bool(r["simple_prompt"]) for r in got)
    assert importlib.util.find_spec("lavis") is None  # still not in the main venv
