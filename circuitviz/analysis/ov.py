"""How a head's OV circuit turns across checkpoints: its trajectory in 2-D, and whether the change
points at the task's answer.

A head's OV matrix ``W_V W_O`` (``[d_model, d_model]``: what it writes for what it reads) is kept
as its two factors per checkpoint, never as the d x d matrix, so every head of a 30-layer model
fits:

1. ``trajectory``: the flattened OV matrices of one head across checkpoints, projected on their two
   principal components (the same for its QK matrix ``W_Q W_K^T``, ``qk_factors``). PCA needs only the inner products of the points,
   ``<OV_s, OV_t> = tr((W_V_s^T W_V_t)(W_O_t W_O_s^T))``, from the factors (dh x dh products).
2. ``top_change_direction``: the top right singular vector of ``ΔOV = OV_s - OV_0`` (the output
   direction the change writes most), from a QR of the stacked factors (rank <= 2 dh).
3. ``cosine_with``: its |cosine| with each example's unembedding direction
   ``W_U[answer] - W_U[wrong]``, averaged (the sign of a singular vector is arbitrary, and so, across
   examples, is which token is the answer: their mean direction would mostly cancel).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class OVFactors:
    """One head's ``W_V`` ``[d_model, d_head]`` and ``W_O`` ``[d_head, d_model]`` at one step."""

    v: torch.Tensor
    o: torch.Tensor

    def matrix(self) -> torch.Tensor:
        return self.v @ self.o


def ov_factors(model) -> dict[str, OVFactors]:
    """Every head's OV factors now, ``aL.hH`` -> factors. With grouped-query attention a head
    reads its key/value group's ``W_V`` (the same tensor for every head of the group)."""
    return _head_factors(model, "W_V", "W_O", grouped="left")


def qk_factors(model) -> dict[str, OVFactors]:
    """Every head's QK matrix ``W_Q W_K^T`` (``[d_model, d_model]``: which query reads attend to
    which key reads) as the same two factors, ``v`` = ``W_Q`` and ``o`` = ``W_K^T``, for
    ``trajectory``. With grouped-query attention a head uses its group's ``W_K``."""
    return _head_factors(model, "W_Q", "W_K", grouped="right", transpose_right=True)


def _head_factors(
    model, left: str, right: str, *, grouped: str, transpose_right: bool = False
) -> dict[str, OVFactors]:
    """``aL.hH`` -> (the bridge's ``left`` weight, its ``right`` weight) of every head; the
    ``grouped`` side is indexed by key/value group. Float32 copies on the CPU, one per group on
    the grouped side: a checkpoint of a 1B model keeps about 0.3 GB (``gram`` and
    ``top_change_direction`` compute in float64)."""
    info = model.info
    group = info.n_heads // info.n_kv_heads
    out = {}
    with torch.no_grad():
        for layer in range(info.n_layers):
            attn = model.bridge.blocks[layer].attn
            a = getattr(attn, left).detach().float().cpu().clone()
            b = getattr(attn, right).detach().float().cpu().clone()
            for head in range(info.n_heads):
                first = a[head // group] if grouped == "left" else a[head]
                second = b[head // group] if grouped == "right" else b[head]
                out[f"a{layer}.h{head}"] = OVFactors(
                    v=first, o=second.T if transpose_right else second
                )
    return out


def gram(steps: list[OVFactors]) -> torch.Tensor:
    """``[n, n]`` inner products of the flattened OV matrices of ``steps``."""
    n = len(steps)
    v = [step.v.double() for step in steps]
    o = [step.o.double() for step in steps]
    out = torch.empty(n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(i, n):
            value = torch.trace((v[i].T @ v[j]) @ (o[j] @ o[i].T))
            out[i, j] = out[j, i] = value
    return out


def trajectory(steps: list[OVFactors]) -> torch.Tensor:
    """``[n, 2]``: the points' coordinates on their first two principal components (kernel PCA on
    the double-centred Gram matrix; a component with no variance is 0)."""
    g = gram(steps)
    n = len(steps)
    centre = torch.eye(n, dtype=torch.float64) - 1.0 / n
    values, vectors = torch.linalg.eigh(centre @ g @ centre)
    order = torch.argsort(values, descending=True)[:2]
    coords = vectors[:, order] * values[order].clamp_min(0).sqrt()
    if coords.shape[1] < 2:
        coords = torch.cat([coords, torch.zeros(n, 2 - coords.shape[1], dtype=torch.float64)], 1)
    return coords


def top_change_direction(start: OVFactors, now: OVFactors) -> torch.Tensor | None:
    """The unit top right singular vector of ``OV_now - OV_start`` ``[d_model]``; None when it is
    zero (the head did not change)."""
    a = torch.cat([now.v, -start.v], dim=1).double()  # [d, 2dh]
    b = torch.cat([now.o, start.o], dim=0).double()  # [2dh, d]
    q, r = torch.linalg.qr(a)
    _, s, vh = torch.linalg.svd(r @ b, full_matrices=False)
    if float(s[0]) <= 1e-12 * max(1.0, float(b.abs().max())):
        return None
    return vh[0]


def cosine_with(direction: torch.Tensor | None, targets: torch.Tensor) -> float | None:
    """The mean |cos| between a singular direction and each row of ``targets`` ``[n, d]`` (or one
    target ``[d]``); None without a direction. The absolute value makes a singular vector's
    arbitrary sign, and a target's, irrelevant."""
    if direction is None:
        return None
    targets = targets.double().reshape(-1, direction.shape[0])
    cos = (targets @ direction.double()).abs() / targets.norm(dim=1).clamp_min(1e-30)
    return float(cos.mean())
