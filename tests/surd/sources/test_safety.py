import pytest

from surd.sources.safety import level_name, parse_level, source_level


@pytest.mark.parametrize(
    ("label", "level"),
    [
        ("None", 0),  # Civitai's names
        ("Soft", 1),
        ("Mature", 2),
        ("X", 3),
        ("1", 0),  # Civitai's browsing-level bits: the highest set counts
        (2, 1),
        ("4", 2),
        ("8", 3),
        ("16", 3),
        ("6", 2),
        ("sfw", 0),  # Lexica's flag
        ("nsfw", 2),
        (None, None),
        ("", None),
        ("banana", None),
        ("0", None),
    ],
)
def test_each_sources_label_lands_on_one_scale(label, level) -> None:
    assert source_level(label) == level


def test_levels_are_given_by_name_or_number() -> None:
    assert parse_level("mature") == parse_level("2") == 2
    assert level_name(None) == "unknown" and level_name(3) == "explicit"
    with pytest.raises(ValueError, match="valid: 0 safe, 1 suggestive, 2 mature, 3 explicit"):
        parse_level("spicy")
