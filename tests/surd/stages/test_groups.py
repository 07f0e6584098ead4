"""Prompt groups: one complex prompt's samples share a group; a cap keeps the earliest accepted."""

from __future__ import annotations

import pyarrow as pa

from surd.stages.groups import cap_groups, group_sizes, prompt_group


def test_a_prompt_written_with_other_spacing_or_case_is_one_group() -> None:
    a = prompt_group("A fox,  in the rain , oil painting")
    assert a == prompt_group("a fox, in the rain, OIL painting") and len(a) == 16
    assert a != prompt_group("a fox in the rain, oil painting")  # the words' punctuation differs
    assert prompt_group(None) == prompt_group("")


def test_the_cap_keeps_the_earliest_decisions_of_each_group_and_holds_back_the_rest() -> None:
    rows = pa.table(
        {
            "sample_id": ["s5", "s1", "s2", "s3", "s4", "s6"],
            "prompt_group": ["g1", "g1", "g2", "g1", "g2", "g3"],
            "decision_id": [1, 9, 5, 4, 2, 7],
        }
    )
    kept, held = cap_groups(rows, 2)
    assert kept.column("sample_id").to_pylist() == ["s2", "s3", "s4", "s5", "s6"]  # in sample-id order
    assert held.column("sample_id").to_pylist() == ["s1"]  # g1's third by decision id
    assert cap_groups(rows, 1)[1].column("sample_id").to_pylist() == ["s3", "s1", "s2"]
    assert cap_groups(rows, None)[0] is rows and len(cap_groups(rows, None)[1]) == 0
    assert group_sizes(rows) == {"groups": 3, "largest": 3, "shared": 5}
    assert group_sizes(rows.slice(0, 0)) == {"groups": 0, "largest": 0, "shared": 0}
