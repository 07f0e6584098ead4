"""The evaluation suites of the paper's Sec. 5: Action, Color and Counting, 15 prompts each.

Every prompt the paper prints (../shared/PAPER.md) is here verbatim with `origin = "paper"` and the
table it comes from: the nine of Tables 1 and 7 (Table 7's wording), with the accuracies the
authors measured by hand on 130 images per prompt, plain SD and with the SUR-adapter; and the six
legible prompts of Table 8. Each suite is filled to the paper's 15 with prompts of ours of the same
kind (`origin = "ours"`). For the Table 1/7 prompts, `semantics` is what a judge checks an image
for ("does the image show …?"): our reading of each prompt, not the paper's words.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Prompt:
    text: str
    origin: str  # "paper" | "ours"
    table: str | None = None  # where the paper prints it: "Table 1/7" or "Table 8"
    paper_accuracy: tuple[float, float] | None = None  # % of images right: plain SD, with SUR-adapter
    semantics: str | None = None  # what "right" means, for the judges' question


def _ours(*texts: str) -> list[Prompt]:
    return [Prompt(t, "ours") for t in texts]


def _table7(text: str, sd: float, ours: float, semantics: str) -> Prompt:
    return Prompt(text, "paper", "Table 1/7", (sd, ours), semantics)


def _table8(*texts: str) -> list[Prompt]:
    return [Prompt(t, "paper", "Table 8") for t in texts]


SUITES: dict[str, list[Prompt]] = {
    "action": [
        _table7(
            "Someone shooting a basketball on the sports field.",
            41.54,
            56.92,
            "someone shooting a basketball",
        ),
        _table7("Giraffes eating trees.", 25.38, 50.77, "giraffes eating from trees"),
        _table7(
            "A chef tossing a pizza dough in the air in a kitchen.",
            15.38,
            32.31,
            "a chef tossing pizza dough in the air",
        ),
        *_ours(
            "a dog running on the beach",
            "a man riding a horse",
            "a cat jumping over a fence",
            "a girl reading a book under a tree",
            "a boy kicking a football",
            "two people dancing in the rain",
            "a bird catching a fish",
            "a chef cutting vegetables",
            "a woman climbing a mountain",
            "a child blowing out birthday candles",
            "a bear swimming in a river",
            "an old man playing the violin",
        ),
    ],
    "color": [
        _table7("A vibrant red sports car speeding down a winding road.", 86.15, 93.85, "a red sports car"),
        _table7("The blue glass containing red juice.", 17.69, 20.00, "a blue glass holding red juice"),
        _table7(
            "A couple wearing blue and yellow solid color clothes respectively.",
            0.00,
            6.92,
            "two people, one in solid blue clothes and one in solid yellow",
        ),
        *_table8(
            "A golden sun setting over a calm ocean, with orange and pink hues appearing in the sky",
            "A tranquil scene of a meadow filled with wildflowers in shades of purple, pink, and yellow",
            "A funky and retro diner with a color scheme of bright pink, teal, and silver.",
        ),
        *_ours(
            "a red car on a blue street",
            "a yellow flower in green grass",
            "a white bird in the dark sky",
            "a green apple on a red plate",
            "a purple umbrella in the snow",
            "a black cat on a white sofa",
            "an orange boat on a turquoise lake",
            "a pink house with a blue door",
            "a blue butterfly on a yellow leaf",
        ),
    ],
    "counting": [
        _table7("Four freshly baked pies.", 63.08, 73.85, "exactly four pies"),
        _table7(
            "Six colorful hot air balloons floating over a picturesque landscape.",
            8.46,
            41.54,
            "exactly six hot air balloons",
        ),
        _table7("Seven vintage glass bottles.", 0.00, 36.92, "exactly seven glass bottles"),
        *_table8(
            "A set of four antique teacups and saucers with intricate floral designs.",
            "Five different types of fresh fruit cut into slices and arranged on a platter.",
            "Seven colorful beach umbrellas on a sandy beach.",
        ),
        *_ours(
            "two cats on a bed",
            "three trees near a lake",
            "four people walking in the city",
            "one red apple and two green apples",
            "five birds on a wire",
            "two dogs and one cat",
            "three candles on a table",
            "four chairs around a round table",
            "two boats on a calm sea",
        ),
    ],
}


def suite_texts(suites: dict[str, list[Prompt]] | None = None) -> dict[str, list[str]]:
    return {k: [p.text for p in v] for k, v in (suites or SUITES).items()}
