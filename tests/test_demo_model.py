"""The demo corpus, tokenizer and training recipe, and the shipped demo model's scores on held-out
generated data (the thresholds of the project's issue, section 4)."""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from circuitviz.demo.corpus import build_corpus, corpus_fingerprint
from circuitviz.demo.pretrain import PretrainConfig, pretrain_demo
from circuitviz.demo.tokenizer import build_demo_tokenizer, count_unknown, demo_vocabulary
from circuitviz.models import load_model
from circuitviz.tasks import TASKS, draw_examples, evaluate_task, heldout_texts, lm_loss
from circuitviz.tasks.heldout import filler_texts

DEMO_DIR = Path(__file__).resolve().parents[1] / "assets" / "demo-model"
TINY = PretrainConfig(
    n_layers=2, n_heads=2, d_model=16, n_ctx=32, batch_size=8, warmup_steps=5, n_threads=1
)


def test_same_seed_gives_the_same_corpus():
    assert build_corpus(300, seed=4) == build_corpus(300, seed=4)
    assert build_corpus(300, seed=4) != build_corpus(300, seed=5)


def _words(text: str) -> tuple[str, ...]:
    return tuple(re.findall(r"\w+|[^\w\s]+", text))


def test_corpus_holds_no_dev_or_test_prompt_and_no_heldout_text():
    corpus = build_corpus(6000, seed=0)
    starts = {words[:k] for words in map(_words, corpus) for k in range(2, len(words) + 1)}

    def seen(example):  # the prompt followed by either answer starts some training sentence
        return any(_words(example.clean + a) in starts for a in (example.answer, example.wrong))

    for task in TASKS:
        for split in ("dev", "test"):
            examples = draw_examples(task, split=split, n=150, seed=0)
            assert not any(seen(e) for e in examples), (task, split)
        if task != "ioi":  # (IOI's prompt space is too large for two draws to meet by chance)
            # The check can fail: prompts of the train split do start training sentences.
            assert any(seen(e) for e in draw_examples(task, split="train", n=400, seed=0)), task
    assert not set(corpus) & set(heldout_texts(300))


def test_demo_tokenizer_covers_the_corpus_and_every_task(tmp_path):
    tokenizer = build_demo_tokenizer()
    assert demo_vocabulary() == demo_vocabulary()
    assert count_unknown(tokenizer, build_corpus(3000, seed=99)) == 0
    assert count_unknown(tokenizer, heldout_texts(300, seed=3)) == 0
    for task in TASKS:
        examples = draw_examples(task, split="all", n=300, seed=8)
        assert count_unknown(tokenizer, [e.sentence for e in examples]) == 0
        assert count_unknown(tokenizer, [e.corrupt for e in examples]) == 0
    assert count_unknown(tokenizer, ["The zyzzyva"]) == 1
    assert tokenizer.padding_side == "right"
    assert {tokenizer.pad_token, tokenizer.unk_token, tokenizer.eos_token} == {
        "<pad>",
        "<unk>",
        "<|endoftext|>",
    }
    # Words and punctuation are separate tokens, and a saved tokenizer reloads identically.
    assert tokenizer.tokenize("store, John gave") == ["store", ",", "John", "gave"]
    tokenizer.save_pretrained(tmp_path)
    from transformers import AutoTokenizer

    again = AutoTokenizer.from_pretrained(tmp_path)
    assert (
        again("The keys to the cabinet are")["input_ids"]
        == tokenizer("The keys to the cabinet are")["input_ids"]
    )


def _weights(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(directory / "model.safetensors")


def test_pretrain_is_bit_identical_for_the_same_seed(tmp_path):
    first = pretrain_demo(tmp_path / "a", seed=3, steps=20, config=TINY)
    second = pretrain_demo(tmp_path / "b", seed=3, steps=20, config=TINY)
    other = pretrain_demo(tmp_path / "c", seed=4, steps=20, config=TINY)
    a, b, c = (_weights(r.out_dir) for r in (first, second, other))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    # Training moved the weights and lowered the loss from its start (~ln(vocab)).
    record = json.loads((first.out_dir / "training.json").read_text())
    assert record["config"]["steps"] == 20 and record["config"]["seed"] == 3
    assert first.final_loss < torch.log(torch.tensor(len(demo_vocabulary()))).item()


def test_pretrain_reports_progress_and_writes_a_loadable_directory(tmp_path):
    calls = []
    result = pretrain_demo(
        tmp_path / "m", steps=6, config=TINY, progress=lambda *a: calls.append(a)
    )
    assert [c[:2] for c in calls] == [(i, 6) for i in range(1, 7)]
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {
        p.name for p in result.out_dir.iterdir()
    }
    model = load_model(str(result.out_dir), device="cpu")
    assert (model.info.n_layers, model.info.n_heads, model.info.d_model) == (2, 2, 16)
    ids = model.tokenizer(["The keys to the cabinet"], return_tensors="pt")["input_ids"]
    assert model.bridge(ids).shape == (1, ids.shape[1], len(demo_vocabulary()))


def test_pretrain_config_rejects_bad_values():
    with pytest.raises(ValueError, match="d_model"):
        PretrainConfig(d_model=100, n_heads=8)
    with pytest.raises(ValueError, match="lr"):
        PretrainConfig(lr=0.0)


# --- the shipped model ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo():
    return load_model("demo", device="cpu")


def test_shipped_demo_model_was_trained_by_the_current_recipe():
    # `circuitviz pretrain-demo` must rebuild the shipped model: same config, same corpus, same
    # vocabulary. A change to the generators or lexicon fails here until the model is retrained.
    record = json.loads((DEMO_DIR / "training.json").read_text())
    config = PretrainConfig()
    assert record["config"] == asdict(config)
    corpus = build_corpus(config.steps * config.batch_size, seed=config.seed)
    assert record["corpus_sha256"] == corpus_fingerprint(corpus)


def test_shipped_demo_model_shape_and_size(demo):
    assert demo.info.family == "gpt2"
    assert demo.info.n_layers >= 4 and demo.info.n_heads == 8
    size = sum(p.stat().st_size for p in DEMO_DIR.iterdir() if p.is_file())
    assert size < 10 * 2**20
    assert demo.tokenizer.get_vocab() == build_demo_tokenizer().get_vocab()


def test_shipped_demo_model_meets_the_thresholds_on_heldout_data(demo):
    sv = evaluate_task(demo, "sv-agreement", split="test", n=600)
    assert sv["n_examples"] == 600
    assert sv["accuracy"] >= 0.95
    assert sv["attractor_accuracy"] >= 0.85
    ioi = evaluate_task(demo, "ioi", split="test", n=600)
    assert ioi["accuracy"] >= 0.90
    gender = evaluate_task(demo, "gender-pronoun", split="test", n=600)
    assert 0.70 <= gender["stereotype_rate"] < 0.95
    assert 0.5 < gender["mean_p_stereotyped"] < 0.95
    # The base model agrees, so the disagreement task starts near zero: there is something to learn.
    svd = evaluate_task(demo, "sv-disagreement", split="test", n=600)
    assert svd["accuracy"] < 0.05
    assert svd["logit_diff"] == pytest.approx(-sv["logit_diff"], abs=1e-4)  # same prompts, swapped


def test_shipped_demo_model_generalises_to_heldout_text(demo):
    heldout = lm_loss(demo, heldout_texts(300))
    train = lm_loss(demo, filler_texts(300, split="train", seed=1))
    vocab = len(demo.tokenizer)
    # Far below a uniform guess, and held-out text costs about as much as text it trained on.
    assert heldout < 0.5 * torch.log(torch.tensor(float(vocab))).item()
    assert heldout < 1.3 * train
