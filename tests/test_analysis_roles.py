"""Role detectors and attention extraction against models built by hand to have each behaviour.

The planted model is GPT-2-shaped (2 layers, 4 heads of 8 dims, d_model 32). Its residual stream is
split into orthonormal, zero-mean subspaces: P (2 dims) holds the position on a circle, T (8) the
token (8 test tokens, orthonormal), S (8) a copy of the previous token. Every vector has the same
norm at every position, so LayerNorm only rescales it by one constant. Then:

* a0.h0 is a previous-token head: its query is its position rotated back by one step, its key its
  position, so it attends to the position before; it writes the token it reads into S;
* a0.h1 is a duplicate-token head that copies: query and key are the token, so it attends to every
  occurrence of its own token (itself included), and it writes that token back into T, raising that
  token's logit through the tied unembedding;
* a1.h0 is an induction head: its query is the current token, its key the previous token (in S), so
  it attends to the position after the current token's earlier occurrence;
* every other head attends uniformly and writes nothing; the MLPs write nothing.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from circuitviz.analysis.attention import attention_patterns, attention_to_tagged
from circuitviz.analysis.roles import (
    ROLES,
    attention_roles,
    copying_scores,
    holders,
    random_sequences,
)
from circuitviz.models import load_model
from tests.support.batches import random_batch

TOKENS = (100, 108)  # the 8 test tokens
THETA = math.pi / 24  # one position step on the circle (sequences of at most 24 tokens)


def _rotation(angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, -s], [s, c]], dtype=torch.float64)


@pytest.fixture(scope="module")
def planted():
    model = load_model("random:gpt2-tiny", device="cpu", dtype="float64", seed=0)
    hf = model.hf_model.transformer
    d, dh = 32, 8
    # An orthonormal basis of the zero-mean vectors of R^32.
    centred = torch.eye(d, dtype=torch.float64) - 1.0 / d
    basis = torch.linalg.qr(centred)[0][:, : d - 1]
    P, T, S = basis[:, 0:2], basis[:, 2:10], basis[:, 10:18]
    with torch.no_grad():
        for block in hf.h:
            block.attn.c_attn.weight.zero_()
            block.attn.c_attn.bias.zero_()
            block.attn.c_proj.weight.zero_()
            block.attn.c_proj.bias.zero_()
            block.mlp.c_fc.weight.zero_()
            block.mlp.c_fc.bias.zero_()
            block.mlp.c_proj.weight.zero_()
            block.mlp.c_proj.bias.zero_()
        # Tokens: the test tokens on T's axes, the others on a fixed unit vector of T; positions on
        # a circle in P. Every residual vector then has norm sqrt(2).
        hf.wte.weight.copy_(T[:, 0].repeat(hf.wte.weight.shape[0], 1))
        hf.wte.weight[TOKENS[0] : TOKENS[1]] = T.T
        angles = THETA * torch.arange(hf.wpe.weight.shape[0], dtype=torch.float64)
        circle = torch.stack([angles.cos(), angles.sin()], dim=1)  # [n_pos, 2]
        hf.wpe.weight.copy_(circle @ P.T)

        def qkv(layer: int, head: int, which: int) -> slice:
            start = which * d + head * dh
            return slice(start, start + dh)

        a0, a1 = hf.h[0].attn, hf.h[1].attn
        # a0.h0, previous token: q = 400 R(-theta) P^T x, k = P^T x (LayerNorm scales x by 4).
        a0.c_attn.weight[:, qkv(0, 0, 0)][:, :2] = 400 * P @ _rotation(-THETA).T
        a0.c_attn.weight[:, qkv(0, 0, 1)][:, :2] = P
        a0.c_attn.weight[:, qkv(0, 0, 2)] = T  # reads the token ...
        a0.c_proj.weight[0:dh] = 0.25 * S.T  # ... and writes it into S
        # a0.h1, duplicate token and copying: q = k = the token; writes the token back into T.
        a0.c_attn.weight[:, qkv(0, 1, 0)] = 3 * T
        a0.c_attn.weight[:, qkv(0, 1, 1)] = T
        a0.c_attn.weight[:, qkv(0, 1, 2)] = T
        a0.c_proj.weight[dh : 2 * dh] = 0.25 * T.T
        # a1.h0, induction: q = the token (T), k = the previous token (S).
        a1.c_attn.weight[:, qkv(1, 0, 0)] = 10 * T
        a1.c_attn.weight[:, qkv(1, 0, 1)] = S
    return model


@pytest.fixture(scope="module")
def scores(planted):
    return attention_roles(planted, vocab=TOKENS, length=8, n_sequences=6)


@pytest.mark.parametrize(
    "role, head, at_least",
    [
        ("previous_token", (0, 0), 0.95),
        ("duplicate_token", (0, 1), 0.45),  # it attends to itself as much as to the earlier copy
        ("induction", (1, 0), 0.9),  # 15/16: position 0's "previous token" is its own
    ],
)
def test_each_detector_finds_its_planted_head(scores, role, head, at_least):
    grid = scores[role]
    assert grid.shape == (2, 4)
    assert float(grid[head]) >= at_least
    others = grid.clone()
    others[head] = -1
    assert float(others.max()) < 0.6 * float(grid[head])
    assert holders(scores)[role][0] == f"a{head[0]}.h{head[1]}"


def test_copying_finds_the_head_that_writes_what_it_reads(planted):
    ids = random_sequences(TOKENS, 8, 6, seed=3)
    ids = torch.cat([ids, ids], dim=1)
    grid = copying_scores(planted, ids, torch.full((len(ids),), ids.shape[1] - 1))
    assert holders({"copying": grid})["copying"][0] == "a0.h1"
    assert float(grid[0, 1]) > 0.1
    others = grid.clone()
    others[0, 1] = 0
    assert float(others.abs().max()) < 1e-9  # the other heads write nothing at all


def test_patterns_equal_attention_recomputed_from_the_weights():
    """GPT-2: LayerNorm, the fused projection, the causal mask and softmax by hand."""
    model = load_model("random:gpt2-tiny", device="cpu", dtype="float64", seed=4)
    ids = random_sequences((5, 400), 9, 3, seed=1)
    got = attention_patterns(model, ids)  # [L, batch, H, q, k]
    hf = model.hf_model.transformer
    x = hf.wte(ids) + hf.wpe(torch.arange(ids.shape[1]))
    n, dh = 4, 8
    with torch.no_grad():
        for layer, block in enumerate(hf.h):
            qkv = block.ln_1(x) @ block.attn.c_attn.weight + block.attn.c_attn.bias
            q, k, _ = qkv.split(32, dim=-1)
            q = q.view(*ids.shape, n, dh).transpose(1, 2)
            k = k.view(*ids.shape, n, dh).transpose(1, 2)
            logits = q @ k.transpose(-1, -2) / math.sqrt(dh)
            causal = torch.ones(ids.shape[1], ids.shape[1], dtype=torch.bool).tril()
            expected = logits.masked_fill(~causal, float("-inf")).softmax(-1)
            torch.testing.assert_close(got[layer], expected)
            out = block(x)
            x = out[0] if isinstance(out, tuple) else out


def test_llama_patterns_equal_hugging_faces_eager_attention():
    """Grouped-query attention and rotary positions: against the model's own eager path."""
    model = load_model("random:llama-tiny", device="cpu", dtype="float64", seed=2)
    ids = random_sequences((5, 400), 9, 3, seed=2)
    got = attention_patterns(model, ids)
    model.hf_model.config._attn_implementation = "eager"
    with torch.no_grad():
        out = model.hf_model(ids, output_attentions=True)
    for layer, expected in enumerate(out.attentions):
        torch.testing.assert_close(got[layer], expected, rtol=1e-5, atol=1e-6)


def test_attention_to_tagged_tokens_reads_the_differing_positions(planted):
    """A head that attends uniformly gives each tagged token 1 / (visible positions): the measure
    reads exactly the positions where the clean and corrupted prompts differ."""
    batch = random_batch(n=6, n_pos=8, vocab=512, seed=0, corrupt_at=2, full_first=True)
    weights = attention_to_tagged(planted, batch)
    assert weights.shape == (2, 4)
    assert ((weights >= 0) & (weights <= 1 + 1e-9)).all()
    tagged = (batch.clean_ids != batch.corrupt_ids) & batch.attention_mask.bool()
    expected = [
        float(tagged[i, : t + 1].sum()) / (t + 1)
        for i, t in enumerate(batch.target_pos.tolist())
        if tagged[i].any()
    ]
    assert float(weights[1, 3]) == pytest.approx(sum(expected) / len(expected))
    no_tags = dataclasses.replace(batch, corrupt_ids=batch.clean_ids)
    with pytest.raises(ValueError, match="nothing is tagged"):
        attention_to_tagged(planted, no_tags)


def test_a_prompts_whole_pattern_is_its_real_tokens_rows():
    """One prompt's pattern, read from a right-padded batch's forward, equals the pattern of the
    prompt alone."""
    from circuitviz.analysis.attention import prompt_pattern

    model = load_model("random:llama-tiny", device="cpu", dtype="float64", seed=3)
    batch = random_batch(n=3, n_pos=8, vocab=400, seed=4, full_first=False)
    n = int(batch.attention_mask[1].sum())
    assert n < 8  # a padded row
    patterns, tokens = prompt_pattern(model, batch, row=1)
    assert patterns.shape == (2, 4, n, n) and len(tokens) == n
    whole = attention_patterns(model, batch.clean_ids[1:2, :n])[:, 0]
    torch.testing.assert_close(patterns, whole)
    assert tokens == [model.tokenizer.decode([int(t)]) for t in batch.clean_ids[1, :n]]


def test_the_dashboard_names_every_role():
    """The plotting side (no torch) lists the roles the detectors store, for box colours."""
    from circuitviz.plotting.style import NODE_COLORS, ROLE_LABELS

    assert tuple(ROLE_LABELS) == ROLES
    assert ("kind", "dla", *ROLES) == NODE_COLORS
