"""The pipeline's one declaration (surd.chain): nothing else spells the order; the walk-through's
example stage is one module, one line and a test; a stage inserted into an existing data root
keeps every count true, withdraws what it drops from the review queue, and runs everywhere the
declared stages run (local rebuild, command line)."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from surd import chain, pipeline
from surd.config import load_settings
from surd.review import queries, queue
from surd.status import status

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"


def walkthrough() -> list[str]:
    """The code blocks of the doc's "Adding a stage": the module, the declaration, the test."""
    text = DOC.read_text().split("## Adding a stage", 1)[1]
    return re.findall(r"```python\n(.*?)```", text, re.S)


def example_stage(monkeypatch: pytest.MonkeyPatch) -> type:
    """The walk-through's module, imported as `surd.stages.caption_words` (as if it were added)."""
    module, _, _ = walkthrough()
    path = Path(sys.modules["surd.stages"].__path__[0]) / "caption_words.py"
    assert not path.exists(), "the example is the doc's; the tree does not ship it"
    spec = importlib.util.spec_from_loader("surd.stages.caption_words", loader=None)
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    exec(compile(module, "docs/architecture.md", "exec"), mod.__dict__)
    monkeypatch.setitem(sys.modules, "surd.stages.caption_words", mod)
    return mod.CaptionWords  # type: ignore[no-any-return]


def test_no_module_but_the_declaration_names_three_stage_tables_in_order() -> None:
    """Three string literals in a row (within a few lines) that are declared tables in the
    declared order: an order written out by hand, which goes stale when a stage is added."""
    order = chain.PIPELINE.tables
    literal = re.compile(r"""["']([a-z_]+)["']""")
    offenders = []
    for folder in ("surd", "storage", "adapter", "flows", "tests", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path == ROOT / "surd" / "chain.py":
                continue
            text = path.read_text()
            found = [(m.start(), m.group(1)) for m in literal.finditer(text)]
            for a, b, c in zip(found, found[1:], found[2:], strict=False):
                names = [a[1], b[1], c[1]]
                if (
                    all(n in order for n in names)
                    and c[0] - a[0] < 300
                    and order.index(names[0]) < order.index(names[1]) < order.index(names[2])
                ):
                    line = text[: a[0]].count("\n") + 1
                    offenders.append(f"{path.relative_to(ROOT)}:{line}: {', '.join(names)}")
                    break
    assert offenders == [], "derive the order from surd.chain.PIPELINE instead:\n" + "\n".join(offenders)


def _after(stage: type) -> str:
    """Where the declaration's line goes: after the last declared table the stage reads."""
    tables = chain.PIPELINE.tables
    return max(stage.reads, key=tables.index)


def test_the_walkthrough_example_is_one_module_one_line_and_its_test(monkeypatch: pytest.MonkeyPatch) -> None:
    module, declaration, test = walkthrough()
    stage = example_stage(monkeypatch)
    assert [line.strip() for line in declaration.splitlines() if line.strip()] == [f"{stage.__name__},"]
    added = len(module.splitlines()) + 2 + len(test.splitlines())  # the entry and its import
    assert added <= 100, added
    namespace: dict[str, Any] = {}
    exec(compile(test, "docs/architecture.md", "exec"), namespace)
    for name, fn in namespace.items():
        if name.startswith("test_"):
            fn()  # the doc's own test, run as written: no data root, no order spelled out
    # the diffstat the page quotes is the walkthrough's: three files, this many lines
    stat = DOC.read_text().split("## Adding a stage", 1)[1]
    assert f"surd/stages/caption_words.py            | {len(module.splitlines())} " in stat
    assert f"tests/surd/stages/test_caption_words.py | {len(test.splitlines())} " in stat
    assert f"3 files changed, {added} insertions(+)" in stat


@pytest.fixture
def released(released_demo: Path) -> Path:
    return released_demo


def _settings(root: Path, replay: Any) -> Any:
    from surd.app.demo import demo_config

    return load_settings(**demo_config(root, replay))


def _add_up(stages: dict[str, Any]) -> None:
    for name in [*chain.PIPELINE.tables, "review"]:
        c = stages[name]
        assert c["pending"] >= 0, (name, c)
        assert c["in"] == c["out"] + sum(c["dropped"].values()) + c["pending"], (name, c)


def test_a_stage_inserted_into_an_existing_data_root_keeps_every_count_true(
    released: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, replay: Any
) -> None:
    root = tmp_path / "data"
    shutil.copytree(released, root)
    stage = example_stage(monkeypatch)
    monkeypatch.setattr(chain, "PIPELINE", chain.PIPELINE.with_stage(stage, after=_after(stage)))
    monkeypatch.setenv("SURD_CAPTION_WORDS__MIN_WORDS", "7")  # drops a good share of the demo's
    s = _settings(root, replay)
    data = chain.PIPELINE.data_dir(root)
    before = status(s, data)["stages"]
    _add_up(before)
    captioned = before["captions"]["out"]
    assert before["caption_words"] == {
        "in": captioned,
        "out": 0,
        "dropped": {},
        "pending": captioned,
        "outside": 0,
    }
    assert before["clip_scores"]["in"] == 0 and before["clip_scores"]["outside"] > 0  # apart, not negative
    assert pipeline.pending_total(s, "caption_words") == captioned

    from surd.app.rebuild import rebuild

    lines: list[str] = []
    out = rebuild(s, train_adapter=False, log=lines.append)
    assert out["caption_words"].processed == captioned and out["clip_scores"].processed == 0
    short = out["caption_words"].dropped["caption_under_7_words"]
    assert 0 < short < captioned
    after = status(s, data)["stages"]
    _add_up(after)
    assert after["clip_scores"]["in"] == captioned - short
    withdrawn = out["review"].withdrawn
    assert withdrawn > 0 and after["review"]["outside"] == withdrawn
    engine = queue.connect(s.review_database_url)
    try:
        states = queries.states(engine).to_pylist()
    finally:
        engine.dispose()
    gone = [r for r in states if r["final_actor"] == "stage:caption_words"]
    assert len(gone) == withdrawn
    assert {(r["final_decision"], r["final_reason"]) for r in gone} == {("reject", "caption_under_7_words")}
    # the next release leaves the withdrawn samples out; nothing else of theirs goes anywhere
    man = json.loads((Path(out["release"]) / "manifest.json").read_text())
    assert not {r["sample_id"] for r in gone} & set(man["fingerprint"])
    assert man["counts"]["caption_words"] == captioned - short
    card = (Path(out["release"]) / "README.md").read_text()
    assert "| captions long enough |" in card  # the funnel's column, from the stage's label
    # the stage's declared column reaches the shards, `load_dataset` and the card's column table
    import datasets
    import pyarrow.parquet as pq

    shards = sorted(Path(out["release"]).glob("shard-*.parquet"))
    rows = {
        r["sample_id"]: r
        for sh in shards
        for r in pq.read_table(
            sh, columns=["sample_id", "simple_prompt", "caption", "caption_words"]
        ).to_pylist()
    }
    assert rows and all(r["caption_words"] == len(r["caption"].split()) >= 7 for r in rows.values())
    ds = datasets.load_dataset("parquet", data_files=[str(p) for p in shards], split="train")
    assert ds.features["caption_words"].dtype == "int32" and len(ds) == len(rows)
    assert "| `caption_words` | int32 | words in the BLIP caption |" in card
    # and a rerun has nothing to do
    assert [r.processed for r in pipeline.run_all(s)] == [0] * len(chain.PIPELINE.stages)
    assert pipeline.review(s).withdrawn == 0


def test_the_command_line_has_a_command_per_declared_stage(
    released: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, replay: Any
) -> None:
    import typer

    from surd.app.cli import stages as commands

    root = tmp_path / "data"
    shutil.copytree(released, root)
    monkeypatch.setattr(chain, "PIPELINE", chain.PIPELINE.with_stage(example_stage(monkeypatch), "captions"))
    app = typer.Typer()
    commands.register(app)
    runner = CliRunner()
    names = [c.name for c in app.registered_commands] + [g.name for g in app.registered_groups]
    assert {chain.PIPELINE.command(s) for s in chain.PIPELINE} <= set(names)
    monkeypatch.setenv("SURD_DATA_ROOT", str(root))
    monkeypatch.setenv("SURD_PROFILE", "tiny")
    got = runner.invoke(app, ["caption-words", "--json"])
    assert got.exit_code == 0, got.output
    run = json.loads(got.stdout)
    assert (
        run["stage"] == "caption_words" and run["processed"] == run["kept"] + sum(run["dropped"].values()) > 0
    )
