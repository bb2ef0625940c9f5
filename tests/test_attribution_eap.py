"""EAP and EAP-IG against exact edge patching on tiny float64 GPT-2 and Llama models.

The oracle (``circuitviz.attribution.patching``) patches one edge at a time with a plain forward.
EAP must equal its finite-difference derivative; EAP-IG must be closer than EAP to the true effect.
"""

from __future__ import annotations

import pytest
import torch
from support.batches import Batch, random_batch

from circuitviz.attribution import (
    AttributionConfig,
    attribute,
    batch_edge_scores,
    edge_derivatives,
    edge_effects,
)
from circuitviz.attribution.activations import run_and_capture, source_means
from circuitviz.attribution.hooks import ROOT_HOOK
from circuitviz.graph.topology import graph_for


@pytest.fixture(params=["gpt2", "llama"])
def model(request, tiny_gpt2):
    return tiny_gpt2 if request.param == "gpt2" else request.getfixturevalue("float64_llama")


def mean_scores(model, graph, batch, config) -> torch.Tensor:
    """float64 scores averaged over the batch, ``[n_src, n_dst]``."""
    result = batch_edge_scores(model, graph, batch, config)
    return result.scores / result.n_examples


@pytest.mark.parametrize(
    ("baseline", "positions", "paper"),
    [
        ("corrupted", "all", False),
        ("corrupted", "target", False),
        ("mean", "all", False),
        ("zero", "target", False),
        ("corrupted", "all", True),
    ],
)
def test_eap_equals_finite_difference_of_single_edge_patching(model, baseline, positions, paper):
    graph = graph_for(model.info, paper=paper)
    batch = random_batch()
    config = AttributionConfig(method="eap", baseline=baseline, positions=positions)
    scores = mean_scores(model, graph, batch, config)[graph.valid_mask]
    edges = graph.edge_index().tolist()
    oracle = edge_derivatives(model, graph, batch, config, edges, eps=1e-4)
    assert oracle.abs().max() > 1e-4  # the check is not vacuous
    torch.testing.assert_close(scores, oracle, rtol=1e-4, atol=1e-4 * float(oracle.abs().max()))


def test_eap_ig_with_many_steps_is_closer_to_exact_patching_than_eap(model):
    graph = graph_for(model.info)
    batch = random_batch(n=8, n_pos=8, seed=1)
    edges = graph.edge_index().tolist()
    exact = edge_effects(model, graph, batch, AttributionConfig(), edges)

    def error(method: str, steps: int) -> float:
        config = AttributionConfig(method=method, ig_steps=steps)
        scores = mean_scores(model, graph, batch, config)[graph.valid_mask]
        return float((scores - exact).norm() / exact.norm())

    eap = error("eap", 1)
    assert eap > 0.05  # the model is nonlinear enough for the comparison to mean something
    assert error("eap-ig-inputs", 32) < 0.5 * eap
    assert error("eap-ig-activations", 32) < 0.5 * eap


@pytest.mark.parametrize("method", ["eap-ig-inputs", "eap-ig-activations"])
def test_eap_ig_with_one_step_is_eap(tiny_gpt2, method):
    graph = graph_for(tiny_gpt2.info)
    batch = random_batch()
    eap = mean_scores(tiny_gpt2, graph, batch, AttributionConfig(method="eap"))
    config = AttributionConfig(method=method, ig_steps=1, ig_rule="right")
    ig = mean_scores(tiny_gpt2, graph, batch, config)
    torch.testing.assert_close(ig, eap, rtol=1e-12, atol=1e-15)


def ig_inputs_oracle(model, graph, batch, config, edges) -> torch.Tensor:
    """EAP-IG over inputs the slow way: at each of the rule's points alpha, the finite-difference
    derivative of single-edge patching with the input embedding moved to baseline + alpha
    (clean - baseline), averaged over the points."""
    _, base_embed, _ = run_and_capture(
        model, graph, batch.corrupt_ids.to(model.device), batch.attention_mask.to(model.device)
    )
    total = torch.zeros(len(edges), dtype=torch.float64)
    for alpha in config.alphas():

        def move(x, hook, alpha=alpha):
            return base_embed + alpha * (x - base_embed)

        total += edge_derivatives(
            model, graph, batch, config, edges, eps=1e-4, extra_hooks=[(ROOT_HOOK, move)]
        )
    return total / len(config.alphas())


@pytest.mark.parametrize("rule", ["left", "right"])
def test_eap_ig_inputs_averages_gradients_at_its_rules_points(model, rule):
    graph = graph_for(model.info)
    batch = random_batch(seed=2)
    config = AttributionConfig(method="eap-ig-inputs", ig_steps=3, ig_rule=rule)
    assert config.alphas() == ((0.0, 1 / 3, 2 / 3) if rule == "left" else (1 / 3, 2 / 3, 1.0))
    edges = graph.edge_index().tolist()
    scores = mean_scores(model, graph, batch, config)[graph.valid_mask]
    oracle = ig_inputs_oracle(model, graph, batch, config, edges)
    assert oracle.abs().max() > 1e-4
    torch.testing.assert_close(scores, oracle, rtol=1e-4, atol=1e-4 * float(oracle.abs().max()))


def test_the_two_ig_rules_differ_by_their_end_points(tiny_gpt2):
    """right(m) - left(m) = (S(1) - S(0)) / m, S(alpha) the one-point score (S(1) is EAP)."""
    graph = graph_for(tiny_gpt2.info)
    batch = random_batch(seed=3)
    m = 4

    def scores(**kw) -> torch.Tensor:
        return mean_scores(tiny_gpt2, graph, batch, AttributionConfig(**kw))

    for method in ("eap-ig-inputs", "eap-ig-activations"):
        left = scores(method=method, ig_steps=m, ig_rule="left")
        right = scores(method=method, ig_steps=m, ig_rule="right")
        at_zero = scores(method=method, ig_steps=1, ig_rule="left")
        eap = scores(method="eap")
        assert (right - left).abs().max() > 1e-6
        torch.testing.assert_close(right - left, (eap - at_zero) / m, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    "config",
    [
        AttributionConfig(method="eap", baseline="corrupted"),
        AttributionConfig(method="eap", baseline="mean", positions="target"),
        AttributionConfig(method="eap-ig-inputs", baseline="zero", ig_steps=3),
        AttributionConfig(method="eap-ig-activations", baseline="mean", ig_steps=3),
    ],
    ids=lambda c: f"{c.method}-{c.baseline}-{c.positions}",
)
def test_batching_and_padding_do_not_change_scores(tiny_gpt2, config):
    graph = graph_for(tiny_gpt2.info)
    batch = random_batch(n=6, n_pos=7, seed=2)
    whole = attribute(tiny_gpt2, graph, [batch], config).scores
    split = attribute(tiny_gpt2, graph, [batch.rows(slice(0, 2)), batch.rows(slice(2, 6))], config)
    padded = attribute(tiny_gpt2, graph, (b.padded(3) for b in [batch]), config)
    assert whole.abs().max() > 0
    torch.testing.assert_close(split.scores, whole, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(padded.scores, whole, rtol=1e-5, atol=1e-7)
    assert split.n_examples == padded.n_examples == 6


@pytest.mark.parametrize("positions", ["all", "target"])
@pytest.mark.parametrize("method", ["eap", "eap-ig-inputs", "eap-ig-activations"])
def test_a_batchs_own_mean_from_its_clean_forward_is_the_separate_mean(model, method, positions):
    """Without ``means`` the mean baseline is read off the clean forward; it must equal the mean
    a separate capture forward gives (which the embedding path of EAP-IG needs too)."""
    graph = graph_for(model.info)
    batch = random_batch(n=3, n_pos=5, seed=4).padded(2)
    config = AttributionConfig(method=method, baseline="mean", ig_steps=2, positions=positions)
    separate = source_means(model, graph, [batch])
    given = batch_edge_scores(model, graph, batch, config, means=separate).scores
    own = batch_edge_scores(model, graph, batch, config).scores
    assert given.abs().max() > 0
    torch.testing.assert_close(own, given, rtol=1e-6, atol=1e-9 * float(given.abs().max()))


@pytest.mark.parametrize(
    ("config", "graph_kw"),
    [
        (AttributionConfig(method="eap", baseline="corrupted"), {}),
        (AttributionConfig(method="eap", baseline="mean", positions="target"), {"paper": True}),
        (AttributionConfig(method="eap-ig-activations", ig_steps=2), {"mlp_groups": 4}),
    ],
    ids=["eap", "paper-target", "ig-activations-groups"],
)
def test_closed_form_qkv_gradients_equal_the_per_head_copies(model, config, graph_kw):
    """The lean path (no per-head input copies) gives the scores the bridge's copies give, on
    both families (GPT-2's LayerNorm, Llama's RMSNorm and grouped k/v heads)."""
    graph = graph_for(model.info, **graph_kw)
    batch = random_batch(n=3, n_pos=6, seed=5).padded(1)
    copies = batch_edge_scores(model, graph, batch, config, per_head_copies=True).scores
    assert model.bridge.cfg.use_split_qkv_input  # restored after the lean pass below too
    lean = batch_edge_scores(model, graph, batch, config).scores
    assert model.bridge.cfg.use_split_qkv_input
    qkv = [i for i, name in enumerate(graph.dst_names) if name.endswith(">")]
    assert copies[:, qkv].abs().max() > 0
    torch.testing.assert_close(lean, copies, rtol=1e-7, atol=1e-10 * float(copies.abs().max()))


class _OtherNorm(torch.nn.Module):
    """A norm circuitviz has no closed form for: the VJP falls back to autograd through it."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)


@pytest.mark.parametrize("kind", ["layer", "rms", "other"])
def test_the_norm_vjp_equals_autograd_through_norm_and_projection(kind):
    """``NormJacobian.projected_vjp`` (weight and 1/scale folded in, centred in place, head-major)
    against autograd through per-head copies of the input, the norm and the projection."""
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    from circuitviz.attribution.lean import NormJacobian

    gen = torch.Generator().manual_seed(3)
    d_model, n, e = 8, 4, 5
    norm = torch.nn.LayerNorm(d_model) if kind != "rms" else LlamaRMSNorm(d_model)
    with torch.no_grad():
        for param in norm.parameters():
            param.copy_(torch.randn(param.shape, generator=gen))
    norm = norm.double()
    if kind == "other":
        norm = _OtherNorm(norm)
    x = 3 * torch.randn(2, 3, d_model, generator=gen, dtype=torch.float64) + 1
    weight = torch.randn(n, e, d_model, generator=gen, dtype=torch.float64)
    grad_out = torch.randn(2, 3, n, e, generator=gen, dtype=torch.float64)
    copies = x.unsqueeze(-2).expand(2, 3, n, d_model).clone().requires_grad_(True)
    if kind == "rms":  # transformers' RMSNorm computes in float32; the oracle keeps float64
        scale = torch.rsqrt(copies.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
        normed = norm.weight * copies * scale
    else:
        normed = norm(copies)
    projected = torch.einsum("bpnd,ned->bpne", normed, weight)
    (expected,) = torch.autograd.grad(projected, copies, grad_out)
    got = NormJacobian(norm, x).projected_vjp(grad_out, weight)
    assert got.shape == (n, 2, 3, d_model)
    torch.testing.assert_close(got, expected.permute(2, 0, 1, 3), rtol=1e-10, atol=1e-12)


def training_text(batch: Batch, extra: int = 3, seed: int = 9) -> tuple[torch.Tensor, torch.Tensor]:
    """Each clean prompt followed right after its last real token by random tokens (an answer and
    a continuation), right-padded: (ids, mask) as a pair task's ``train_ids``/``train_mask``."""
    gen = torch.Generator().manual_seed(seed)
    n, n_pos = batch.clean_ids.shape
    lengths = batch.attention_mask.sum(1)
    ids = torch.zeros(n, n_pos + extra, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row in range(n):
        total = int(lengths[row]) + extra
        ids[row, :total] = torch.randint(3, 512, (total,), generator=gen)
        ids[row, : int(lengths[row])] = batch.clean_ids[row, : int(lengths[row])]
        mask[row, :total] = 1
    return ids, mask


@pytest.mark.parametrize(
    "config",
    [
        AttributionConfig(method="eap", baseline="corrupted", positions="target"),
        AttributionConfig(method="eap", baseline="mean", positions="all"),
        AttributionConfig(method="eap-ig-inputs", baseline="zero", ig_steps=2),
    ],
    ids=lambda c: f"{c.method}-{c.baseline}-{c.positions}",
)
def test_a_forward_of_the_training_text_scores_the_prompt(model, config):
    """Read through a text the prompt is a prefix of, the scores are the prompt's own, and the
    logits are that text's (with their graph), for the training loss."""
    graph = graph_for(model.info)
    batch = random_batch(n=4, n_pos=6, seed=6)
    ids, mask = training_text(batch)
    plain = batch_edge_scores(model, graph, batch, config).scores
    shared = batch_edge_scores(
        model, graph, batch, config, forward_ids=(ids, mask), return_logits=True
    )
    assert plain.abs().max() > 0
    torch.testing.assert_close(
        shared.scores, plain, rtol=1e-6, atol=1e-9 * float(plain.abs().max())
    )
    with torch.no_grad():
        expected = model.bridge(ids, attention_mask=mask)
    torch.testing.assert_close(shared.logits.detach(), expected)
    bad = ids.clone()
    bad[1, 0] += 1  # no longer starts with its prompt
    with pytest.raises(ValueError, match="must start with each clean prompt"):
        batch_edge_scores(model, graph, batch, config, forward_ids=(bad, mask))


def test_scores_layout_and_invalid_cells(tiny_llama):
    graph = graph_for(tiny_llama.info)
    result = attribute(tiny_llama, graph, [random_batch()], AttributionConfig())
    assert result.scores.dtype == torch.float32 and result.scores.device.type == "cpu"
    assert tuple(result.scores.shape) == (graph.n_src, graph.n_dst)
    assert bool((result.scores[~graph.valid_mask] == 0).all())
    assert int((result.scores[graph.valid_mask] != 0).sum()) > 0.9 * graph.n_edges
    assert result.edge_vector().shape == (graph.n_edges,)
    top = result.ranked(5)
    assert [abs(e.score) for e in top] == sorted((abs(e.score) for e in top), reverse=True)
    assert top[0].name == f"{top[0].src}->{top[0].dst}"


def test_no_hook_or_frozen_parameter_outlives_the_call(tiny_gpt2):
    graph = graph_for(tiny_gpt2.info)
    attribute(tiny_gpt2, graph, [random_batch()], AttributionConfig(method="eap-ig-activations"))
    assert all(p.requires_grad for p in tiny_gpt2.bridge.parameters())
    for hook_point in tiny_gpt2.bridge.hook_points():
        assert not hook_point._forward_hooks and not hook_point._backward_hooks


def test_return_logits_lets_a_training_step_reuse_the_clean_forward(tiny_gpt2):
    graph = graph_for(tiny_gpt2.info)
    batch = random_batch()
    config = AttributionConfig()
    plain = batch_edge_scores(tiny_gpt2, graph, batch, config)
    reused = batch_edge_scores(tiny_gpt2, graph, batch, config, return_logits=True)
    torch.testing.assert_close(reused.scores, plain.scores, rtol=1e-12, atol=1e-15)
    with torch.no_grad():
        expected = tiny_gpt2.bridge(batch.clean_ids, attention_mask=batch.attention_mask)
    torch.testing.assert_close(reused.logits.detach(), expected)
    tiny_gpt2.bridge.zero_grad(set_to_none=True)
    reused.logits[:, -1].logsumexp(-1).sum().backward()
    grads = [p.grad for p in tiny_gpt2.bridge.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)
    tiny_gpt2.bridge.zero_grad(set_to_none=True)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="method"):
        AttributionConfig(method="acdc")
    with pytest.raises(ValueError, match="ig_steps"):
        AttributionConfig(method="eap-ig-inputs", ig_steps=0)
    with pytest.raises(ValueError, match="baseline"):
        AttributionConfig(baseline="resample")
    assert (
        "m(edge u->d patched to its baseline) - m(clean)" in AttributionConfig().describe()["sign"]
    )
