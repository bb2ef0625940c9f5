"""Which held-out text measures a model's general ability, and real English that ships everywhere.

Fine-tuning should not cost a model its general language ability; the held-out language-model loss
measures that on text no task uses. Two corpora:

* ``demo-filler``: the demo corpus's synthetic filler sentences (``heldout.filler_texts``, the
  "test" split the demo model never trained on). Right for the demo model, whose word-level
  vocabulary knows nothing else; strange to a real model (SmolLM2 scores 5.3 nats/token on it).
* ``python-docs``: real English prose from the Python language reference and library topics that
  every CPython installation carries for ``help()`` (``pydoc_data.topics``): no download, no task
  uses it. Paragraphs are kept when they are prose: no indented code or grammar lines, no heading
  underlines, 200-1000 characters, at least 85% letters and spaces, ending with a full stop, no
  ``::=`` or ``>>>``; duplicates are removed (about 280 paragraphs, 25k tokens, on Python 3.11).
  The text changes a little between Python versions, so the corpus name carries the version.

``heldout_corpus(tokenizer)`` picks one: the real text unless the tokenizer maps more than 5% of
its tokens to the unknown token (a word-level vocabulary such as the demo model's), and says which,
so a run can record the text its loss was measured on.
"""

from __future__ import annotations

import hashlib
import logging
import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from circuitviz.tasks.heldout import heldout_texts

log = logging.getLogger(__name__)

MAX_UNKNOWN = 0.05
_UNDERLINE = re.compile(r"[*=\-~^\"]+")
_BLANK = re.compile(r"\n\s*\n")


@dataclass(frozen=True, kw_only=True)
class HeldoutCorpus:
    """A named held-out text: ``name`` (``python-docs-3.11`` or ``demo-filler``), where it comes
    from, and its texts (one paragraph or sentence each)."""

    name: str
    source: str
    texts: tuple[str, ...]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "n_texts": len(self.texts)}


def _is_prose(block: str) -> str | None:
    lines = block.split("\n")
    if any(line.startswith((" ", "\t")) for line in lines):
        return None  # code, grammar productions, indented lists
    if any(_UNDERLINE.fullmatch(line.strip()) for line in lines):
        return None  # a heading
    text = " ".join(line.strip() for line in lines).strip()
    if not 200 <= len(text) <= 1000 or not text.endswith("."):
        return None
    if "::=" in text or ">>>" in text:
        return None
    letters = sum(ch.isalpha() or ch.isspace() for ch in text)
    return text if letters >= 0.85 * len(text) else None


@lru_cache(maxsize=1)
def python_docs_paragraphs() -> tuple[str, ...]:
    """Every prose paragraph of ``pydoc_data.topics``, deduplicated, in a stable order."""
    try:
        from pydoc_data.topics import topics
    except ImportError as exc:  # a Python built without its documentation topics
        raise RuntimeError(
            "this Python has no pydoc_data.topics (its help() documentation), the real-text "
            "held-out corpus; install the full standard library (e.g. Debian's libpython3-stdlib)"
        ) from exc
    seen: dict[str, None] = {}
    for key in sorted(topics):
        for block in _BLANK.split(topics[key]):
            text = _is_prose(block)
            if text is not None:
                seen.setdefault(text, None)
    return tuple(seen)


def python_docs_texts(n: int, *, seed: int = 0) -> list[str]:
    """``n`` paragraphs (all of them if there are fewer), in an order fixed by ``seed``."""
    paragraphs = python_docs_paragraphs()
    order = sorted(
        paragraphs, key=lambda t: hashlib.blake2b(f"{seed}:{t}".encode(), digest_size=8).digest()
    )
    if n > len(order):
        log.warning("python-docs has %d paragraphs; using all of them, not %d", len(order), n)
    return order[:n]


def unknown_rate(tokenizer: Any, texts: list[str]) -> float:
    """Fraction of the tokens of ``texts`` that are the tokenizer's unknown token (0 without one)."""
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is None or not texts:
        return 0.0
    ids = [
        token for row in tokenizer(texts, add_special_tokens=False)["input_ids"] for token in row
    ]
    return sum(token == unk for token in ids) / max(len(ids), 1)


def python_docs_name() -> str:
    return f"python-docs-{sys.version_info.major}.{sys.version_info.minor}"


def heldout_corpus(tokenizer: Any, n: int = 256, *, seed: int = 0) -> HeldoutCorpus:
    """The held-out text for a model with ``tokenizer`` (see the module docstring)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    real = python_docs_texts(n, seed=seed)
    rate = unknown_rate(tokenizer, real[:32])
    if rate > MAX_UNKNOWN:
        log.info("held-out text: demo filler (%.0f%% of real text is unknown tokens)", 100 * rate)
        return HeldoutCorpus(
            name="demo-filler",
            source="synthetic filler sentences of the demo corpus, test split "
            "(circuitviz.tasks.heldout)",
            texts=tuple(heldout_texts(n, seed=seed)),
        )
    version = ".".join(map(str, sys.version_info[:3]))
    return HeldoutCorpus(
        name=python_docs_name(),
        source=f"prose paragraphs of the Python {version} documentation topics (pydoc_data.topics)",
        texts=tuple(real),
    )
