"""MLP neuron groups: where each architecture keeps an MLP's weights, and the per-group algebra.

An MLP of width ``d_mlp`` computes ``out = W_out act(W_in norm(x) [, W_gate norm(x)]) + b_out``.
Splitting its neurons into ``G`` groups of ``k = d_mlp / G`` consecutive neurons makes each group a
graph node (``m{L}.g{j}``, see ``circuitviz.graph.names``):

* a group's **output** is its neurons' contribution to the MLP output,
  ``c_j = hidden[..., j*k:(j+1)*k] @ W_out[j*k:(j+1)*k, :]``; the groups' outputs sum to the MLP
  output minus its output bias, which no group owns alone (as a head's output excludes ``b_O``);
* a group's **input** is its own copy of the MLP input (the residual stream before the MLP's norm):
  ``pre[..., j*k:(j+1)*k] = norm(x_j) @ W_in[:, j*k:(j+1)*k] + b_in[j*k:(j+1)*k]`` (and the same
  for the gate of a gated MLP). With every copy equal to ``x`` this is the ordinary MLP; giving each
  group its own copy makes the gradient per group exact, through the model's own norm module.

Weight layouts differ: GPT-2 stores ``c_fc`` and ``c_proj`` as Conv1D, ``[in, out]``, so the
neurons are the *columns* of ``c_fc.weight`` ``[d_model, d_mlp]`` and the *rows* of
``c_proj.weight`` ``[d_mlp, d_model]``; Llama-family models store ``nn.Linear`` weights
``[out, in]``, so the neurons are the *rows* of ``gate_proj``/``up_proj`` ``[d_mlp, d_model]`` and
the *columns* of ``down_proj`` ``[d_model, d_mlp]``. ``MLP_LAYOUTS`` records this once; everything
else (the parameter map, the attribution hooks) reads it from here. The grouped weights are views of
the live parameters, taken at each use, so a tuning step is seen at once and gradients reach the
parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from einops import einsum, rearrange


@dataclass(frozen=True)
class MLPLayout:
    """Where one family keeps its MLP tensors (canonical parameter names, ``{L}`` for the layer)
    and along which axis of each tensor the neurons lie."""

    in_weight: str
    in_neuron_dim: int
    out_weight: str
    out_neuron_dim: int
    in_bias: str | None = None
    gate_weight: str | None = None
    gate_bias: str | None = None
    out_bias: str | None = None  # shared by every group

    def owned(self) -> list[tuple[str, int | None]]:
        """(template, neuron axis or None for a tensor every group shares) of every MLP tensor."""
        pieces: list[tuple[str, int | None]] = [
            (self.in_weight, self.in_neuron_dim),
            (self.out_weight, self.out_neuron_dim),
        ]
        if self.gate_weight is not None:
            pieces.append((self.gate_weight, self.in_neuron_dim))
        for bias in (self.in_bias, self.gate_bias):
            if bias is not None:
                pieces.append((bias, 0))
        if self.out_bias is not None:
            pieces.append((self.out_bias, None))
        return pieces


_LLAMA = MLPLayout(
    in_weight="model.layers.{L}.mlp.up_proj.weight",
    in_neuron_dim=0,
    in_bias="model.layers.{L}.mlp.up_proj.bias",
    gate_weight="model.layers.{L}.mlp.gate_proj.weight",
    gate_bias="model.layers.{L}.mlp.gate_proj.bias",
    out_weight="model.layers.{L}.mlp.down_proj.weight",
    out_neuron_dim=1,
    out_bias="model.layers.{L}.mlp.down_proj.bias",
)
MLP_LAYOUTS: dict[str, MLPLayout] = {
    "gpt2": MLPLayout(
        in_weight="transformer.h.{L}.mlp.c_fc.weight",
        in_neuron_dim=1,
        in_bias="transformer.h.{L}.mlp.c_fc.bias",
        out_weight="transformer.h.{L}.mlp.c_proj.weight",
        out_neuron_dim=0,
        out_bias="transformer.h.{L}.mlp.c_proj.bias",
    ),
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _LLAMA,
}


def mlp_layout(family: str) -> MLPLayout:
    if family not in MLP_LAYOUTS:
        raise NotImplementedError(
            f"MLP neuron groups are not mapped for model family {family!r} (supported: "
            f"{', '.join(sorted(MLP_LAYOUTS))}); use whole-MLP nodes (no --mlp-groups)"
        )
    return MLP_LAYOUTS[family]


def _grouped(weight: torch.Tensor, neuron_dim: int, n_groups: int) -> torch.Tensor:
    """A view ``[group, d_model, k]`` of an MLP weight whose neurons lie along ``neuron_dim``."""
    if neuron_dim == 0:
        return rearrange(weight, "(group k) d_model -> group d_model k", group=n_groups)
    return rearrange(weight, "d_model (group k) -> group d_model k", group=n_groups)


@dataclass(frozen=True)
class _LayerMLP:
    """One layer's MLP parameters (the live tensors; grouped views are taken at each use, so they
    follow the parameters' current ``requires_grad``)."""

    norm: torch.nn.Module = field(repr=False)
    w_in: torch.Tensor = field(repr=False)
    b_in: torch.Tensor | None = field(repr=False)  # [d_mlp]
    w_gate: torch.Tensor | None = field(repr=False)
    b_gate: torch.Tensor | None = field(repr=False)
    w_out: torch.Tensor = field(repr=False)
    in_dim: int  # neuron axis of w_in and w_gate
    out_dim: int  # neuron axis of w_out


@dataclass(frozen=True)
class MLPGroups:
    """The grouped weights of every layer of one model, for ``n_groups`` groups per MLP."""

    n_groups: int
    d_mlp: int
    gated: bool
    layers: tuple[_LayerMLP, ...] = field(repr=False)

    @property
    def group_size(self) -> int:
        return self.d_mlp // self.n_groups

    def contributions(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        """Each group's share of the MLP output, node-major: hidden ``[batch, pos, d_mlp]`` (the
        activation fed to the output projection) -> ``[group, batch, pos, d_model]``."""
        grouped = rearrange(hidden, "batch pos (group k) -> batch pos group k", group=self.n_groups)
        mlp = self.layers[layer]
        return einsum(
            grouped,
            _grouped(mlp.w_out, mlp.out_dim, self.n_groups),
            "batch pos group k, group d_model k -> group batch pos d_model",
        )

    def normalize(self, layer: int, copies: torch.Tensor) -> torch.Tensor:
        """The MLP's own norm applied to each group's copy of the input, ``[batch, pos, group,
        d_model]`` (the norm acts on the last axis, so one call covers every copy)."""
        return self.layers[layer].norm(copies)

    def pre_activation(self, layer: int, normed: torch.Tensor, which: str) -> torch.Tensor:
        """The input (``which="in"``) or gate (``"gate"``) projection, each group reading only its
        own normalised copy: ``[batch, pos, group, d_model]`` -> ``[batch, pos, d_mlp]``."""
        mlp = self.layers[layer]
        weight, bias = (mlp.w_in, mlp.b_in) if which == "in" else (mlp.w_gate, mlp.b_gate)
        if weight is None:
            raise ValueError(f"layer {layer}'s MLP has no {which!r} projection")
        weight = _grouped(weight, mlp.in_dim, self.n_groups)
        pre = einsum(
            normed, weight, "batch pos group d_model, group d_model k -> batch pos group k"
        )
        pre = rearrange(pre, "batch pos group k -> batch pos (group k)")
        return pre if bias is None else pre + bias


def build_mlp_groups(model, n_groups: int) -> MLPGroups:
    """The grouped MLP weights of a ``LoadedModel`` (views of its live parameters)."""
    from circuitviz.models.params import canonical_name

    layout = mlp_layout(model.info.family)
    params = {canonical_name(n): p for n, p in model.bridge.named_parameters()}
    d_mlp = model.info.d_mlp
    if d_mlp is None or d_mlp % n_groups:
        raise ValueError(f"mlp_groups={n_groups} does not divide the MLP width {d_mlp}")

    def get(template: str | None, layer: int) -> torch.Tensor | None:
        return None if template is None else params.get(template.format(L=layer))

    layers = []
    for layer in range(model.info.n_layers):
        w_in, w_out = get(layout.in_weight, layer), get(layout.out_weight, layer)
        if w_in is None or w_out is None:
            raise RuntimeError(f"layer {layer}: MLP weights {layout.in_weight!r} not found")
        layers.append(
            _LayerMLP(
                norm=model.bridge.blocks[layer].ln2.original_component,
                w_in=w_in,
                b_in=get(layout.in_bias, layer),
                w_gate=get(layout.gate_weight, layer),
                b_gate=get(layout.gate_bias, layer),
                w_out=w_out,
                in_dim=layout.in_neuron_dim,
                out_dim=layout.out_neuron_dim,
            )
        )
    return MLPGroups(
        n_groups=n_groups, d_mlp=d_mlp, gated=layout.gate_weight is not None, layers=tuple(layers)
    )
