"""The synthetic English corpus the demo model is trained on.

Sentence kinds and their shares (`CORPUS_MIX`):
1. agreement: subject-verb agreement with attractor nouns and relative clauses (tasks.sv);
2. pronoun: occupations with pronouns skewed toward a stereotype (tasks.gender), so the model
   learns a measurable bias;
3. name: a named person with an occupation and the pronoun of the name's gender;
4. ioi: indirect-object sentences ("When Mary and John went to the store, John gave a drink to
   Mary.") (tasks.ioi);
5. filler: varied general text that no task uses (tasks.heldout).

Only sentences whose prompt (the part a task would show a model) hashes into the "train" split are
used, so no dev or test prompt of any task, and no held-out filler sentence, appears verbatim here.
The corpus is a pure function of (n, seed).
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable

from circuitviz.tasks import lexicon
from circuitviz.tasks.base import split_of
from circuitviz.tasks.gender import occupation_bias, sample_pronoun_sentence
from circuitviz.tasks.heldout import filler_sentence
from circuitviz.tasks.ioi import generate_ioi
from circuitviz.tasks.sv import sample_agreement

NAME_FRAMES: tuple[str, ...] = (
    "{name} is {article} {occupation}, and {pronoun} {rest}",
    "{name} works as {article} {occupation} because {pronoun} {rest}",
    "{name} met {article} {occupation} today, and {pronoun} {rest}",
)


def _agreement(rng: random.Random) -> tuple[str, str]:
    s = sample_agreement(rng)
    return s.prompt, f"{s.prompt} {s.verb}{s.continuation}"


def _ioi(rng: random.Random) -> tuple[str, str]:
    example = generate_ioi(rng)
    return example.clean, example.sentence


def _filler(rng: random.Random) -> tuple[str, str]:
    text = filler_sentence(rng)
    return text, text


def _name(rng: random.Random) -> tuple[str, str]:
    occupation = rng.choice(
        lexicon.FEMALE_OCCUPATIONS + lexicon.MALE_OCCUPATIONS + lexicon.NEUTRAL_OCCUPATIONS
    )
    female = rng.random() < 1.0 / (1.0 + math.exp(-occupation_bias(occupation)))
    name = rng.choice(lexicon.FEMALE_NAMES if female else lexicon.MALE_NAMES)
    text = rng.choice(NAME_FRAMES).format(
        name=name,
        article="an" if occupation[0] in "aeiou" else "a",
        occupation=occupation,
        pronoun="she" if female else "he",
        rest=rng.choice(lexicon.PRONOUN_CONTINUATIONS),
    )
    return text, text


# (kind, share, sampler returning (prompt that decides the split, sentence)).
CORPUS_MIX: tuple[tuple[str, float, Callable[[random.Random], tuple[str, str]]], ...] = (
    ("agreement", 0.32, _agreement),
    ("pronoun", 0.18, sample_pronoun_sentence),
    ("name", 0.05, _name),
    ("ioi", 0.27, _ioi),
    ("filler", 0.18, _filler),
)


def corpus_sentence(rng: random.Random) -> str:
    """One training sentence; redraws until its prompt belongs to the train split."""
    kinds = [sampler for _, _, sampler in CORPUS_MIX]
    weights = [share for _, share, _ in CORPUS_MIX]
    sampler = rng.choices(kinds, weights)[0]
    while True:
        prompt, sentence = sampler(rng)
        if split_of(prompt) == "train":
            return sentence


def build_corpus(n: int, *, seed: int = 0) -> list[str]:
    """`n` training sentences, the same list for the same seed."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(f"demo-corpus:{seed}")
    return [corpus_sentence(rng) for _ in range(n)]


def corpus_fingerprint(texts: list[str]) -> str:
    """SHA-256 of the corpus: training.json records it so drift in the generator is caught."""
    return hashlib.sha256("\n".join(texts).encode()).hexdigest()
