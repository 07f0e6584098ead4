"""Artifacts name the code that made them: the checkout's commit, or only the version outside one."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from storage import provenance


def test_in_this_checkout_the_identity_is_its_commit() -> None:
    head = subprocess.run(
        ["git", "-C", str(provenance.ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    code = provenance.code_identity()
    assert code["commit"] == head and isinstance(code["dirty"], bool) and code["version"]


def test_a_copy_outside_this_checkout_claims_no_commit(tmp_path: Path) -> None:
    """An installed copy inside some other repository must not take that repository's commit."""
    other = tmp_path / "other-repo"
    (other / "site-packages" / "storage").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(other)], check=True)
    shutil.copy(provenance.__file__, other / "site-packages" / "storage" / "provenance.py")
    (other / "site-packages" / "storage" / "__init__.py").write_text("")
    code = subprocess.run(
        [sys.executable, "-c", "import json, storage.provenance as p; print(json.dumps(p.code_identity()))"],
        cwd=other / "site-packages",
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert json.loads(code)["commit"] is None and json.loads(code)["dirty"] is None
