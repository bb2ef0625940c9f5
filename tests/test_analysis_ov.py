"""OV trajectories from low-rank factors against the explicit d x d matrices."""

from __future__ import annotations

import pytest
import torch

from circuitviz.analysis.ov import (
    OVFactors,
    cosine_with,
    gram,
    ov_factors,
    qk_factors,
    top_change_direction,
    trajectory,
)
from circuitviz.models import load_model


def _random_path(n_steps=4, d=12, dh=3, seed=0) -> list[OVFactors]:
    g = torch.Generator().manual_seed(seed)
    v0 = torch.randn(d, dh, generator=g, dtype=torch.float64)
    o0 = torch.randn(dh, d, generator=g, dtype=torch.float64)
    path = [OVFactors(v0, o0)]
    for step in range(1, n_steps):
        path.append(
            OVFactors(
                v0 + 0.3 * step * torch.randn(d, dh, generator=g, dtype=torch.float64),
                o0 + 0.2 * torch.randn(dh, d, generator=g, dtype=torch.float64),
            )
        )
    return path


def test_factors_are_the_models_value_and_output_weights():
    gpt2 = load_model("random:gpt2-tiny", device="cpu", dtype="float64", seed=1)
    block = gpt2.hf_model.transformer.h[1].attn
    head, dh, d = 2, 8, 32
    got = ov_factors(gpt2)["a1.h2"]  # kept in float32
    value = block.c_attn.weight[:, 2 * d + head * dh : 2 * d + (head + 1) * dh]
    torch.testing.assert_close(got.v, value.float())
    torch.testing.assert_close(got.o, block.c_proj.weight[head * dh : (head + 1) * dh].float())
    llama = load_model("random:llama-tiny", device="cpu", dtype="float64", seed=1)
    attn = llama.hf_model.model.layers[0].self_attn
    got = ov_factors(llama)["a0.h3"]  # 4 heads over 2 key/value groups: head 3 reads group 1
    torch.testing.assert_close(got.v, attn.v_proj.weight[8:16].T.float())
    torch.testing.assert_close(got.o, attn.o_proj.weight[:, 24:32].T.float())
    factors = ov_factors(llama)
    assert factors["a0.h2"].v.data_ptr() == factors["a0.h3"].v.data_ptr()  # one W_V per group


def test_qk_factors_are_the_query_and_key_weights():
    gpt2 = load_model("random:gpt2-tiny", device="cpu", dtype="float64", seed=1)
    block = gpt2.hf_model.transformer.h[0].attn
    got = qk_factors(gpt2)["a0.h1"]
    torch.testing.assert_close(got.v, block.c_attn.weight[:, 8:16].float())
    torch.testing.assert_close(got.o, block.c_attn.weight[:, 32 + 8 : 32 + 16].T.float())
    llama = load_model("random:llama-tiny", device="cpu", dtype="float64", seed=1)
    attn = llama.hf_model.model.layers[1].self_attn
    got = qk_factors(llama)["a1.h3"]  # group 1's key
    torch.testing.assert_close(got.v, attn.q_proj.weight[24:32].T.float())
    torch.testing.assert_close(got.o, attn.k_proj.weight[8:16].float())


def test_trajectory_is_pca_of_the_flattened_matrices():
    path = _random_path()
    flat = torch.stack([step.matrix().flatten() for step in path])
    torch.testing.assert_close(gram(path), flat @ flat.T)
    centred = flat - flat.mean(0)
    u, s, _ = torch.linalg.svd(centred, full_matrices=False)
    expected = u[:, :2] * s[:2]
    got = trajectory(path)
    for k in range(2):  # each component up to its sign
        sign = torch.sign((got[:, k] * expected[:, k]).sum())
        torch.testing.assert_close(got[:, k] * sign, expected[:, k])
    assert float(got.abs().max()) > 0.1


def test_top_change_direction_is_the_top_singular_vector_of_the_change():
    path = _random_path(seed=3)
    delta = path[2].matrix() - path[0].matrix()
    expected = torch.linalg.svd(delta)[2][0]
    got = top_change_direction(path[0], path[2])
    assert abs(float(got @ expected)) == pytest.approx(1.0, abs=1e-9)
    assert top_change_direction(path[0], path[0]) is None


def test_a_change_that_writes_the_answer_direction_has_cosine_one():
    path = _random_path(n_steps=1, seed=4)
    start = path[0]
    answer = torch.randn(12, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    read = torch.randn(12, 1, dtype=torch.float64)
    now = OVFactors(torch.cat([start.v, read], 1), torch.cat([start.o, 2 * answer[None]], 0))
    assert cosine_with(top_change_direction(start, now), answer) == pytest.approx(1.0)
    assert cosine_with(None, answer) is None
    # Across examples the answer and the wrong token swap: the mean of |cos| does not cancel.
    swapped = torch.stack([answer, -answer, answer])
    assert cosine_with(top_change_direction(start, now), swapped) == pytest.approx(1.0)
    other = torch.linalg.qr(torch.stack([answer, torch.randn(12, dtype=torch.float64)], 1))[0][:, 1]
    both = torch.stack([answer, other])  # one along the change, one orthogonal to it
    assert cosine_with(top_change_direction(start, now), both) == pytest.approx(0.5)
