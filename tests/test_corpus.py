"""The held-out text of a model: real English prose from the Python documentation topics for real
tokenizers, the demo filler for the demo model's word-level vocabulary."""

from __future__ import annotations

import sys

import pytest

from circuitviz.tasks.corpus import (
    heldout_corpus,
    python_docs_paragraphs,
    python_docs_texts,
    unknown_rate,
)


def test_python_docs_paragraphs_are_prose():
    paragraphs = python_docs_paragraphs()
    assert len(paragraphs) >= 150  # about 280 on Python 3.11
    assert len(set(paragraphs)) == len(paragraphs)
    for text in paragraphs:
        assert 200 <= len(text) <= 1000 and text.endswith(".")
        assert "\n" not in text and "::=" not in text and ">>>" not in text
        assert sum(ch.isalpha() or ch.isspace() for ch in text) >= 0.85 * len(text)
    assert python_docs_texts(20, seed=1) == python_docs_texts(20, seed=1)
    assert python_docs_texts(20, seed=1) != python_docs_texts(20, seed=2)
    assert set(python_docs_texts(20, seed=1)) <= set(paragraphs)


def test_the_demo_vocabulary_gets_the_filler_and_a_real_tokenizer_the_docs():
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    from circuitviz.models.cache import fallback_tokenizer

    demo = fallback_tokenizer()
    assert unknown_rate(demo, python_docs_texts(16)) > 0.3
    corpus = heldout_corpus(demo, 12)
    assert corpus.name == "demo-filler" and len(corpus.texts) == 12

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(python_docs_texts(50), vocab_size=400, show_progress=False)
    real = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer)
    assert unknown_rate(real, python_docs_texts(16)) == 0.0
    corpus = heldout_corpus(real, 12, seed=3)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert corpus.name == f"python-docs-{version}"
    assert corpus.texts == tuple(python_docs_texts(12, seed=3))
    assert corpus.describe()["n_texts"] == 12 and "pydoc_data" in corpus.describe()["source"]
    with pytest.raises(ValueError, match="n must be"):
        heldout_corpus(real, 0)


def test_the_docs_are_text_no_task_uses():
    from circuitviz.tasks import draw_examples
    from circuitviz.tasks.arithmetic import generate_problem

    docs = " ".join(python_docs_paragraphs())
    import random

    prompts = [e.clean for e in draw_examples("sv-agreement", split="all", n=50, seed=0)]
    prompts += [generate_problem(random.Random(i)).prompt for i in range(50)]
    assert not any(prompt in docs for prompt in prompts)


@pytest.mark.real_model
@pytest.mark.slow
def test_smollm2_finds_real_text_easier_than_the_demo_filler():
    from circuitviz.models import load_model
    from circuitviz.tasks import heldout_texts, lm_loss

    model = load_model("smollm2-135m", device="cpu")
    corpus = heldout_corpus(model.tokenizer, 32)
    assert corpus.name.startswith("python-docs")
    real = lm_loss(model, list(corpus.texts), batch_size=8)
    filler = lm_loss(model, heldout_texts(32), batch_size=8)
    assert real < 4.0 < filler  # measured: about 2.9 and 5.3 nats/token
