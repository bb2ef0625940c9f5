"""Indirect-object identification (Wang et al. 2022, "Interpretability in the Wild").

Two names are introduced, one of them (the subject S) is repeated, and the prompt ends right before
the indirect object, which is the name that was *not* repeated:

    When Mary and John went to the store, John gave a drink to   | Mary (answer) / John (wrong)

Tag "abba" when S is the second name introduced, "baba" when it is the first. The corrupted prompt
is ABC-style: the repeated S is replaced by a third name, so no name is a duplicate and the prompt no
longer says who receives ("..., Tom gave a drink to").
"""

from __future__ import annotations

import random

from circuitviz.tasks import lexicon
from circuitviz.tasks.base import Example, TaskSpec

# {a}, {b}: the two names introduced; {s}: the repeated subject; {place}, {gift}, {verb}: lexicon.
TEMPLATES: tuple[str, ...] = (
    "When {a} and {b} went to the {place}, {s} {verb} a {gift} to",
    "After {a} and {b} arrived at the {place}, {s} {verb} a {gift} to",
    "While {a} and {b} were at the {place}, {s} {verb} a {gift} to",
    "Then, {a} and {b} went to the {place}. {s} {verb} a {gift} to",
    "{a} and {b} had a long day at the {place}. {s} {verb} a {gift} to",
    "When {a} and {b} got a {gift} at the {place}, {s} decided to give it to",
)
CONTINUATIONS: tuple[str, ...] = (".", " later.", " at once.", " with a smile.")


def generate_ioi(rng: random.Random) -> Example:
    """One IOI example; its tags name the name order and the template."""
    first, second, third = rng.sample(lexicon.NAMES, 3)
    template_idx = rng.randrange(len(TEMPLATES))
    subject_is_first = rng.random() < 0.5
    subject, indirect = (first, second) if subject_is_first else (second, first)
    slots = {
        "a": first,
        "b": second,
        "place": rng.choice(lexicon.OUTING_PLACES),
        "gift": rng.choice(lexicon.GIFTS),
        "verb": rng.choice(lexicon.GIVING_VERBS),
    }
    template = TEMPLATES[template_idx]
    return Example(
        clean=template.format(s=subject, **slots),
        corrupt=template.format(s=third, **slots),
        answer=" " + indirect,
        wrong=" " + subject,
        continuation=rng.choice(CONTINUATIONS),
        tags=("baba" if subject_is_first else "abba", f"template:{template_idx}"),
    )


IOI = TaskSpec(
    name="ioi",
    generate=generate_ioi,
    answer_convention="answer = the indirect object (the name not repeated), wrong = the repeated "
    "subject name",
)
