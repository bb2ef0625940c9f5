"""The demo model's word-level tokenizer: one token per English word or punctuation mark.

The vocabulary is every word the corpus generator can write (the lexicon, the templates' own words,
the filler grammar) plus three special tokens. Text is split on whitespace and punctuation
(`\\w+|[^\\w\\s]+`), so "When Mary and John went to the store, John" and " are" tokenize to words the
same way for prompts and answers; decoding joins tokens with spaces.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from circuitviz.demo.corpus import NAME_FRAMES, build_corpus
from circuitviz.tasks import gender as gender_task
from circuitviz.tasks import heldout, lexicon
from circuitviz.tasks import ioi as ioi_task

PAD_TOKEN = "<pad>"
UNK_TOKEN = "<unk>"
EOS_TOKEN = "<|endoftext|>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD_TOKEN, UNK_TOKEN, EOS_TOKEN)
_WORD = re.compile(r"\w+|[^\w\s]+")


def _strings(value: object) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, tuple | list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)


def demo_vocabulary() -> list[str]:
    """Special tokens first, then every word the corpus can contain, sorted (deterministic)."""
    sources: list[object] = [
        [getattr(lexicon, name) for name in dir(lexicon) if name.isupper()],
        heldout.NUMBERS,
        heldout.WORDS,
        heldout.TEMPLATES,
        ioi_task.TEMPLATES,
        ioi_task.CONTINUATIONS,
        gender_task.OBJECT_BIAS,
        gender_task.NO_OBJECT_FRAMES,
        gender_task.OCCUPATION_ADJECTIVES,
        NAME_FRAMES,
        # The few words templates write inline ("The", "that", "because", "After", "an", ...).
        build_corpus(4000, seed=12345),
    ]
    words = {word for text in _strings(sources) for word in _WORD.findall(text)}
    words -= set("{}")
    return list(SPECIAL_TOKENS) + sorted(words)


def build_demo_tokenizer(vocabulary: list[str] | None = None, *, model_max_length: int = 64):
    """A PreTrainedTokenizerFast over `vocabulary` (default: `demo_vocabulary()`), right padding."""
    words = demo_vocabulary() if vocabulary is None else vocabulary
    if len(set(words)) != len(words):
        raise ValueError("vocabulary has duplicate words")
    missing = [token for token in SPECIAL_TOKENS if token not in words]
    if missing:
        raise ValueError(f"vocabulary lacks the special tokens {missing}")
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token=UNK_TOKEN))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token=UNK_TOKEN,
        pad_token=PAD_TOKEN,
        eos_token=EOS_TOKEN,
        bos_token=EOS_TOKEN,
        padding_side="right",
        model_max_length=model_max_length,
    )


def count_unknown(tokenizer: PreTrainedTokenizerFast, texts: list[str]) -> int:
    """How many tokens of `texts` the tokenizer maps to the unknown token."""
    unk = tokenizer.unk_token_id
    return sum(ids.count(unk) for ids in tokenizer(texts)["input_ids"])


__all__ = [
    "EOS_TOKEN",
    "PAD_TOKEN",
    "SPECIAL_TOKENS",
    "UNK_TOKEN",
    "build_demo_tokenizer",
    "count_unknown",
    "demo_vocabulary",
]
