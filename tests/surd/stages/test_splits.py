"""Frozen splits and decontamination, on their own; `surd release diff` and `approve` from the
command line; a 451 as its own final reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from surd.app.cli import main
from surd.release_settings import ReleaseSettings
from surd.review import queue
from surd.stages.decontam import Decontaminator, evaluation_prompts, words
from surd.stages.splits import SPLITS, assign, split_of


def test_a_groups_split_is_a_pure_function_of_it_with_the_configured_shares() -> None:
    cfg = ReleaseSettings()
    groups = [f"{i:016x}" for i in range(20_000)]
    got = [split_of(g, cfg) for g in groups]
    assert got == [split_of(g, cfg) for g in groups]  # the same every time
    share = {s: got.count(s) / len(got) for s in SPLITS}
    assert abs(share["validation"] - 0.05) < 0.01 and abs(share["test"] - 0.05) < 0.01
    other = ReleaseSettings(split_salt="another")
    assert sum(a != split_of(g, other) for g, a in zip(groups, got, strict=True)) > 1000  # the salt draws


@pytest.mark.parametrize(
    ("text", "hit"),
    [
        ("Giraffes eating trees.", "exact"),
        ("GIRAFFES — eating   trees!!", "exact"),  # the same once normalised
        ("two giraffes eating trees in the savanna, 8k", "ngram"),  # a short prompt, whole
        ("the golden sun setting over a calm ocean with orange and pink hues", "ngram"),  # 8 words
        ("a golden sun setting over a calm sea", None),  # 6 words of a long prompt: not enough
        ("giraffes eating", None),
        ("", None),
    ],
)
def test_the_decontamination_rule(text: str, hit: str | None) -> None:
    deco = Decontaminator(evaluation_prompts(), 8)
    found = deco.match(text)
    assert (found.how if found else None) == hit, (text, found)
    assert words("Ünïcödé FULL-WIDTH ＡＢＣ") == ("ünïcödé", "full", "width", "abc")


def test_a_group_with_one_contaminated_prompt_goes_whole_to_test(tmp_path: Path) -> None:
    extra = tmp_path / "ours.txt"
    extra.write_text("a lighthouse on a cliff in a storm\n")
    cfg = ReleaseSettings(decontaminate_with=[extra])
    rows = pa.table(
        {
            "sample_id": ["a", "b", "c"],
            "prompt_group": ["g1", "g1", "g2"],
            "complex_prompt": ["A lighthouse on a cliff in a storm, 4k", "lighthouse, watercolor", "a cat"],
            "simple_prompt": ["a painting", "a painting", "a cat"],
        }
    )
    split, reason, hits = assign(rows, cfg)
    assert split.to_pylist()[:2] == ["test", "test"] and reason.to_pylist()[:2] == ["decontaminated:ours"] * 2
    assert split.to_pylist()[2] == split_of("g2", cfg) and reason.to_pylist()[2] is None
    assert set(hits) == {"a"} and hits["a"]["field"] == "complex_prompt"


def surd(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        main(list(argv))
    got = capsys.readouterr()
    return int(done.value.code or 0), got.out, got.err


def test_release_diff_and_list_from_the_command_line(
    released_copy: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from surd.config import load_settings

    monkeypatch.setenv("SURD_DATA_ROOT", str(released_copy))
    monkeypatch.setenv("SURD_PROFILE", "tiny")
    s = load_settings()
    engine = queue.connect(s.review_database_url)
    try:
        [item] = queue.claim(engine, "alice", 1, 600, queue.Filters())
        queue.decide(engine, item["sample_id"], "alice", "accept")
        queue.decide(engine, item["sample_id"], "bob", "accept")
    finally:
        engine.dispose()
    code, out, err = surd(capsys, "release", "create", "--json")
    assert code == 0, err
    out_file = released_copy / "diff.parquet"
    code, out, err = surd(capsys, "release", "diff", "v0001", "v0002", "--out", str(out_file), "--json")
    assert code == 0, err
    import json

    import pyarrow.parquet as pq

    summary: dict[str, Any] = json.loads(out)
    assert summary["added"] == 1 and summary["from"] == "v0001" and summary["to"] == "v0002"
    rows = pq.read_table(out_file).to_pylist()
    assert [(r["sample_id"], r["change"]) for r in rows if r["change"] == "added"] == [
        (item["sample_id"], "added")
    ]
    code, out, _ = surd(capsys, "release", "list")
    assert code == 0 and "v0002  out" in out and "v0001  out" in out
    code, _, err = surd(capsys, "release", "approve", "v0002", "--reason", "why not")
    assert code == 2 and "is not held" in err and len(err.strip().splitlines()) == 1


def test_http_451_is_final_and_said_once(tmp_path: Path) -> None:
    from surd import pipeline
    from surd.app.demo import demo_config
    from surd.config import load_settings
    from surd.sources.replay import ReplaySite
    from surd.stages.crawl import CrawlFailed

    site = ReplaySite().start()
    try:
        site.fault("civitai", "region_blocked")
        s = load_settings(**demo_config(tmp_path / "data", site))
        with pytest.raises(CrawlFailed, match="region_blocked at .* retrying will not help"):
            pipeline.crawl(s, "civitai")
        asked = [p for _, p in site.requests if "/civitai/api/v1/images" in p]
        assert len(asked) == 1  # never retried
        st = pipeline.open_data(s).state("crawl-civitai")
        assert st["region_blocked"] and st["down_since"]
    finally:
        site.stop()
