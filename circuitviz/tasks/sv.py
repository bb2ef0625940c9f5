"""Subject-verb agreement and its flipped twin, the circuit-tuning paper's disagreement task.

A prompt is a subject noun phrase that ends right before the main verb; the metric reads the last
token of the phrase. Five structures, the last four of which put another noun (or verb) between the
subject and its verb:

    simple   The keys                                   | are
    pp       The keys to the cabinet                    | are
    pp2      The keys to the cabinet near the window    | are
    obj_rc   The keys that the man likes                | are
    subj_rc  The keys that follow the man               | are

An intervening noun of the other number is an *attractor* (tag "attractor"). The corrupted prompt
flips the subject's number (and, in subj_rc, the relative-clause verb that agrees with it):
"The keys to the cabinet" -> "The key to the cabinet". For sv-agreement the answer is the agreeing
verb; for sv-disagreement (Li et al. 2025, arXiv:2502.06106) it is the verb of the other number.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from circuitviz.tasks import lexicon
from circuitviz.tasks.base import Example, TaskScores, TaskSpec

STRUCTURE_WEIGHTS: tuple[tuple[str, float], ...] = (
    ("simple", 0.15),
    ("pp", 0.35),
    ("pp2", 0.10),
    ("obj_rc", 0.25),
    ("subj_rc", 0.15),
)


@dataclass(frozen=True, kw_only=True)
class AgreementSentence:
    """One generated agreement sentence, before it becomes an Example."""

    prompt: str  # subject phrase, ends right before the verb
    flipped_prompt: str  # the same phrase with the subject's number flipped
    verb: str  # the agreeing verb form (no space)
    other_verb: str  # the other number's form
    continuation: str  # rest of the sentence after the verb, with its leading space
    tags: tuple[str, ...]


def _noun_phrase(rng: random.Random, noun: str, adjective_p: float = 0.25) -> str:
    if rng.random() < adjective_p:
        return f"{rng.choice(lexicon.NOUN_ADJECTIVES)} {noun}"
    return noun


def _other_noun(
    rng: random.Random, pool: tuple[tuple[str, str], ...], avoid: str
) -> tuple[str, str]:
    while True:
        pair = rng.choice(pool)
        if pair[0] != avoid:
            return pair


def _continuation(rng: random.Random, verb_singular: str) -> str:
    if verb_singular == "has":
        possession = rng.choice(lexicon.POSSESSIONS)
        return f" a {_noun_phrase(rng, possession, 0.4)}."
    adjective = rng.choice(lexicon.PREDICATE_ADJECTIVES)
    if rng.random() < 0.3:
        return f" {rng.choice(lexicon.DEGREE_ADVERBS)} {adjective}."
    return f" {adjective}."


def _middle(
    rng: random.Random, structure: str, subject_lemma: str, plural: bool
) -> tuple[str, str, bool]:
    """The words between subject and verb, for either subject number, and whether any is an attractor.

    Returns (middle for the true subject number, middle for the flipped number, attractor).
    """
    if structure == "simple":
        return "", "", False
    place_pool = lexicon.PLACE_NOUNS + lexicon.SUBJECT_NOUNS
    if structure in ("pp", "pp2"):
        n_phrases = 1 if structure == "pp" else 2
        words, attractor = [], False
        for _ in range(n_phrases):
            other = _other_noun(rng, place_pool, subject_lemma)
            other_plural = rng.random() < 0.5
            attractor |= other_plural != plural
            words.append(
                f" {rng.choice(lexicon.PREPOSITIONS)} the {_noun_phrase(rng, other[other_plural])}"
            )
        text = "".join(words)
        return text, text, attractor
    other = _other_noun(rng, lexicon.SUBJECT_NOUNS, subject_lemma)
    other_plural = rng.random() < 0.5
    verb = rng.choice(lexicon.TRANSITIVE_VERBS)
    other_np = _noun_phrase(rng, other[other_plural])
    if structure == "obj_rc":
        text = f" that the {other_np} {verb[other_plural]}"
        return text, text, other_plural != plural
    # subj_rc: the relative clause's verb agrees with the subject, so it flips with it.
    return (
        f" that {verb[plural]} the {other_np}",
        f" that {verb[not plural]} the {other_np}",
        other_plural != plural,
    )


def sample_agreement(rng: random.Random) -> AgreementSentence:
    """Draw one grammatical agreement sentence from the templates and lexicon."""
    structure = rng.choices(
        [name for name, _ in STRUCTURE_WEIGHTS], [w for _, w in STRUCTURE_WEIGHTS]
    )[0]
    subject = rng.choice(lexicon.SUBJECT_NOUNS)
    plural = rng.random() < 0.5
    adjective = f"{rng.choice(lexicon.NOUN_ADJECTIVES)} " if rng.random() < 0.2 else ""
    middle, flipped_middle, attractor = _middle(rng, structure, subject[0], plural)
    verbs = rng.choice(lexicon.AGREEMENT_VERBS)
    tags = [structure, "plural_subject" if plural else "singular_subject"]
    if structure.endswith("_rc"):
        tags.append("relative_clause")
    if attractor:
        tags.append("attractor")
    return AgreementSentence(
        prompt=f"The {adjective}{subject[plural]}{middle}",
        flipped_prompt=f"The {adjective}{subject[not plural]}{flipped_middle}",
        verb=verbs[plural],
        other_verb=verbs[not plural],
        continuation=_continuation(rng, verbs[0]),
        tags=tuple(tags),
    )


def generate_agreement(rng: random.Random) -> Example:
    sentence = sample_agreement(rng)
    return Example(
        clean=sentence.prompt,
        corrupt=sentence.flipped_prompt,
        answer=" " + sentence.verb,
        wrong=" " + sentence.other_verb,
        continuation=sentence.continuation,
        tags=sentence.tags,
    )


def generate_disagreement(rng: random.Random) -> Example:
    """The agreement example with answer and wrong swapped: the target is the wrong-number verb."""
    sentence = sample_agreement(rng)
    return Example(
        clean=sentence.prompt,
        corrupt=sentence.flipped_prompt,
        answer=" " + sentence.other_verb,
        wrong=" " + sentence.verb,
        continuation=sentence.continuation,
        tags=sentence.tags,
    )


def report_agreement(scores: TaskScores) -> dict[str, float]:
    return {
        "attractor_accuracy": scores.accuracy("attractor"),
        "relative_clause_accuracy": scores.accuracy("relative_clause"),
        "n_attractor": float(scores.mask("attractor").sum().item()),
        "n_relative_clause": float(scores.mask("relative_clause").sum().item()),
    }


SV_AGREEMENT = TaskSpec(
    name="sv-agreement",
    generate=generate_agreement,
    report=report_agreement,
    answer_convention="answer = the verb agreeing with the subject; wrong = the other number",
)

SV_DISAGREEMENT = TaskSpec(
    name="sv-disagreement",
    generate=generate_disagreement,
    report=report_agreement,
    answer_convention="answer = the verb of the other number (disagreeing); wrong = the agreeing "
    "verb. Accuracy near 0 means the model still agrees.",
)
