"""Greedy batched generation against a one-prompt-at-a-time loop without a cache (the oracle), and
the SFT evaluation: response loss, exact match (with a known answer key), counts, no-example errors."""

from __future__ import annotations

import pytest
import torch

from circuitviz.models.plain import plain_hf_model
from circuitviz.tasks import SFTExample, SFTFormat, tokenize_sft
from circuitviz.tasks.generate import greedy_generate
from circuitviz.tasks.sft_evaluate import NoUsableExamples, SFTEvalConfig, evaluate_sft


@pytest.fixture(params=["tiny_gpt2", "float64_llama"])
def model(request):
    # float64_llama keeps RMSNorm and the bridge's softmax in float64, as the plain model's sdpa is.
    return request.getfixturevalue(request.param)


def slow_greedy(model, prompt: list[int], max_new: int, stops: set[int]) -> list[int]:
    """The oracle: a full bridge forward per token, no cache, no padding, one prompt at a time."""
    ids = torch.tensor([prompt])
    new: list[int] = []
    for _ in range(max_new):
        with torch.no_grad():
            token = int(model.bridge(ids)[0, -1].argmax())
        if token in stops:
            break
        new.append(token)
        ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    return new


def test_plain_model_shares_the_weights_and_matches_the_bridge(model):
    plain = plain_hf_model(model)
    ids = torch.randint(3, 500, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(plain(ids).logits, model.bridge(ids), rtol=1e-9, atol=1e-9)
    shared = {p.data_ptr() for p in plain.parameters()}
    param = next(p for n, p in model.bridge.named_parameters() if "mlp" in n)
    assert param.data_ptr() in shared  # a tuning step is seen without a copy


def test_batched_greedy_generation_equals_the_slow_loop(model):
    gen = torch.Generator().manual_seed(1)
    prompts = [torch.randint(3, 500, (n,), generator=gen).tolist() for n in (3, 7, 5, 1, 6)]
    # A stop token that some rows produce: the oracle's first token of prompt 0.
    stop = slow_greedy(model, prompts[0], 1, set())[0]
    fast = greedy_generate(model, prompts, max_new_tokens=6, stop_ids=[stop], batch_size=2)
    slow = [slow_greedy(model, prompt, 6, {stop}) for prompt in prompts]
    assert fast == slow
    assert fast[0] == [] and all(len(row) <= 6 for row in fast)
    with pytest.raises(ValueError, match="max_new_tokens"):
        greedy_generate(model, prompts, max_new_tokens=0)


def _data(model, examples, **fmt):
    return tokenize_sft(model.tokenizer, examples, SFTFormat(**fmt), task="t", split="all")


def test_exact_match_against_an_answer_key(tiny_gpt2):
    """References set to what the model really generates score 1; changed ones score 0."""
    prompts = ["the dog", "the keys to the cabinet", "where is the cat", "the nurse said that"]
    probe = _data(tiny_gpt2, [SFTExample(prompt=p, response="runs") for p in prompts])
    config = SFTEvalConfig(max_new_tokens=4, batch_size=3)
    from circuitviz.tasks.sft_evaluate import generate_responses

    texts = generate_responses(tiny_gpt2, probe, config, list(range(len(prompts))))
    from circuitviz.tasks.answers import extract_answer

    examples = [
        SFTExample(prompt=p, response="runs", answer=extract_answer(t) if i % 2 == 0 else "zzz")
        for i, (p, t) in enumerate(zip(prompts, texts))
    ]
    examples.append(SFTExample(prompt="the dog", response="runs fast"))  # no reference answer
    result = evaluate_sft(tiny_gpt2, _data(tiny_gpt2, examples), config)
    assert result["exact_match"] == 0.5
    assert result["n_examples"] == 5 and result["n_with_answer"] == 4
    assert len(result["samples"]) == 3 and result["samples"][0]["correct"] is True
    assert result["response_loss"] > 0


def test_response_loss_is_the_token_weighted_hf_loss(tiny_gpt2):
    examples = [
        SFTExample(prompt="the dog", response=r) for r in ("runs", "the cat is near the door")
    ]
    data = _data(tiny_gpt2, examples)
    result = evaluate_sft(tiny_gpt2, data, SFTEvalConfig(exact_match=False))
    with torch.no_grad():
        expected = tiny_gpt2.hf_model(
            data.batch.input_ids, attention_mask=data.batch.attention_mask, labels=data.batch.labels
        ).loss
    assert result["response_loss"] == pytest.approx(float(expected), rel=1e-6)
    assert "exact_match" not in result


def test_no_usable_example_is_an_error_and_no_answer_is_null(tiny_gpt2):
    long = [SFTExample(prompt=" ".join(["the dog"] * 20), response="runs")]
    empty = _data(tiny_gpt2, long, max_length=8)
    assert empty.n_examples == 0 and empty.n_dropped_too_long == 1
    with pytest.raises(NoUsableExamples, match="no usable example .1 dropped"):
        evaluate_sft(tiny_gpt2, empty)
    plain = evaluate_sft(tiny_gpt2, _data(tiny_gpt2, [SFTExample(prompt="a", response="b")]))
    assert plain["exact_match"] is None and plain["n_with_answer"] == 0
