"""Direct logit attribution against its oracle: the nodes' shares plus the biases are the model's
own logit difference, and the biases are exactly the ones no node owns."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from circuitviz.analysis.dla import direct_logit_attribution
from circuitviz.graph.topology import graph_for
from circuitviz.models import load_model
from tests.support.batches import random_batch


def _pair_batch(vocab: int, seed: int = 1):
    batch = random_batch(n=6, n_pos=8, vocab=vocab, seed=seed, full_first=False)
    return dataclasses.replace(batch, target_pos=batch.attention_mask.sum(1) - 1)


def _with_random_biases(model, seed: int = 0) -> None:
    """Random init leaves biases at zero, which would hide a bias that went missing."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.hf_model.named_parameters():
            if name.endswith("bias") or "ln" in name or "norm" in name:
                param.add_(0.3 * torch.randn(param.shape, generator=g, dtype=param.dtype))


@pytest.mark.parametrize(
    "spec, tolerance, groups",
    [
        ("random:gpt2-tiny", 1e-12, None),
        ("random:llama-tiny", 1e-6, None),
        ("random:gpt2-tiny", 1e-12, 4),
        ("random:llama-tiny", 1e-6, 4),
    ],
    # Llama's RMSNorm computes in float32 even in float64
    ids=["layernorm", "rmsnorm-gqa", "layernorm-mlp-groups", "rmsnorm-mlp-groups"],
)
def test_node_shares_plus_biases_are_the_models_logit_difference(spec, tolerance, groups):
    model = load_model(spec, device="cpu", dtype="float64", seed=2)
    _with_random_biases(model)
    graph = graph_for(model.info, mlp_groups=groups)
    dla = direct_logit_attribution(model, graph, _pair_batch(model.info.d_vocab))
    assert dla.nodes == graph.src_names
    total = dla.per_example.sum(0) + dla.rest
    assert dla.logit_diff.abs().max() > 1e-3  # a real difference, not zero against zero
    torch.testing.assert_close(total, dla.logit_diff, rtol=tolerance, atol=tolerance)
    assert dla.per_example.abs().max() > 1e-3


@pytest.mark.parametrize("groups", [None, 4], ids=["whole-mlps", "mlp-groups"])
def test_rest_is_the_biases_no_node_owns(groups):
    """GPT-2: the attention output biases (and, with MLP groups, the MLP output biases: a group's
    share is its neurons' part, without the bias), the norm's shift and the unembedding bias,
    recomputed from the weights; so the node shares themselves are checked, not only their sum."""
    model = load_model("random:gpt2-tiny", device="cpu", dtype="float64", seed=2)
    _with_random_biases(model)
    batch = _pair_batch(model.info.d_vocab)
    dla = direct_logit_attribution(model, graph_for(model.info, mlp_groups=groups), batch)
    hf = model.hf_model
    # The residual entering ln_f at the target, from a plain forward of the Hugging Face model.
    resid = _final_residual(hf, batch)[torch.arange(len(batch)), batch.target_pos]
    ln = hf.transformer.ln_f
    sigma = (resid.var(-1, unbiased=False, keepdim=True) + ln.eps).sqrt()
    biases = sum(block.attn.c_proj.bias for block in hf.transformer.h)
    if groups is not None:
        biases = biases + sum(block.mlp.c_proj.bias for block in hf.transformer.h)
    direction = hf.lm_head.weight[batch.answer_ids] - hf.lm_head.weight[batch.wrong_ids]
    linear = ln.weight * (biases - biases.mean()) / sigma
    expected = ((linear + ln.bias) * direction).sum(-1)
    torch.testing.assert_close(dla.rest, expected.detach())
    assert expected.abs().max() > 1e-3


@pytest.mark.parametrize("groups", [None, 4], ids=["whole-mlps", "mlp-groups"])
def test_a_model_without_biases_leaves_nothing_to_rest(groups):
    """Llama has no biases and RMSNorm no shift: every bit of the logit difference is some
    node's, so a share lost or counted twice would show here."""
    model = load_model("random:llama-tiny", device="cpu", dtype="float64", seed=2)
    graph = graph_for(model.info, mlp_groups=groups)
    dla = direct_logit_attribution(model, graph, _pair_batch(model.info.d_vocab))
    assert dla.logit_diff.abs().max() > 1e-3
    torch.testing.assert_close(dla.rest, torch.zeros_like(dla.rest), atol=1e-6, rtol=0)


def _final_residual(hf, batch) -> torch.Tensor:
    seen = {}
    handle = hf.transformer.ln_f.register_forward_hook(lambda m, i, o: seen.update(x=i[0]))
    try:
        hf(batch.clean_ids, attention_mask=batch.attention_mask)
    finally:
        handle.remove()
    return seen["x"].detach()


def test_a_batch_without_answers_is_refused():
    model = load_model("random:gpt2-tiny", device="cpu", dtype="float64")
    batch = dataclasses.replace(_pair_batch(model.info.d_vocab), answer_ids=None)
    with pytest.raises(ValueError, match="needs a pair task"):
        direct_logit_attribution(model, graph_for(model.info), batch)
