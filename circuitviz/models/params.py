"""Which parameter entries each graph node owns, per architecture.

Circuit-tuning updates only the parameters of the circuit's nodes, so every node name of the graph
(see ``circuitviz.graph.topology``) maps to exact slices of parameter tensors:

* writer ``a{L}.h{H}``: head H's part of the output projection (GPT-2 ``attn.o`` = ``c_proj``, a
  Conv1D stored ``[in, out]``: rows ``H*d_head:(H+1)*d_head``; Llama ``o_proj``, a Linear stored
  ``[out, in]``: those columns), plus the layer's output bias, which all heads share (as the paper
  does: any selected head trains ``b_O``);
* readers ``a{L}.h{H}<q>``, ``<k>``, ``<v>``: rows ``H*d_head:(H+1)*d_head`` of the q/k/v projection
  weight and bias (under grouped-query attention H is the key/value group for k and v);
* ``m{L}`` (as writer and as reader): the whole MLP;
* ``m{L}.g{j}`` (neuron group j of G, as writer and as reader): its ``d_mlp / G`` neurons' rows or
  columns of the MLP's input, gate and output weights and of the input and gate biases (which axis
  is the neuron axis per architecture: ``circuitviz.models.mlp``), plus the output bias, which all
  groups share (as heads share ``b_O``);
* ``input`` and ``logits``: nothing (embeddings, unembedding and LayerNorms are never tuned).

Parameter names are the bridge's ``named_parameters()`` names with ``._original_component`` removed,
e.g. ``transformer.h.0.attn.q.weight``. On GPT-2 the bridge's q/k/v weights are views sharing storage
with the fused ``c_attn``; gradients land in the views, which is why the map names them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from circuitviz.graph.topology import Graph, parse_node

_STRIP = "._original_component"


def canonical_name(name: str) -> str:
    return name.replace(_STRIP, "")


def count_unique_params(params) -> int:
    """Number of distinct parameter entries: tied weights and the bridge's views of fused tensors
    share storage and are counted once."""
    from circuitviz.models.shards import storage_key

    return sum(dict(storage_key(param) for param in params).values())


@dataclass(frozen=True)
class ParamSlice:
    """``tensor.narrow(dim, start, stop - start)`` of parameter ``name``; ``dim=None`` is the whole
    tensor."""

    name: str
    dim: int | None = None
    start: int = 0
    stop: int = 0

    def numel(self, shape: torch.Size) -> int:
        if self.dim is None:
            return shape.numel()
        return shape.numel() // shape[self.dim] * (self.stop - self.start)


# Per family: templates of (parameter name, slicing rule). "rows"/"cols" slice dim 0/1 by head.
_RULES: dict[str, dict[str, list[tuple[str, str]]]] = {
    "gpt2": {
        "out": [
            ("transformer.h.{L}.attn.o.weight", "rows"),
            ("transformer.h.{L}.attn.o.bias", "all"),
        ],
        "q": [
            ("transformer.h.{L}.attn.q.weight", "rows"),
            ("transformer.h.{L}.attn.q.bias", "rows"),
        ],
        "k": [
            ("transformer.h.{L}.attn.k.weight", "rows"),
            ("transformer.h.{L}.attn.k.bias", "rows"),
        ],
        "v": [
            ("transformer.h.{L}.attn.v.weight", "rows"),
            ("transformer.h.{L}.attn.v.bias", "rows"),
        ],
        "mlp": [
            ("transformer.h.{L}.mlp.c_fc.weight", "all"),
            ("transformer.h.{L}.mlp.c_fc.bias", "all"),
            ("transformer.h.{L}.mlp.c_proj.weight", "all"),
            ("transformer.h.{L}.mlp.c_proj.bias", "all"),
        ],
    },
    "llama": {
        "out": [
            ("model.layers.{L}.self_attn.o_proj.weight", "cols"),
            ("model.layers.{L}.self_attn.o_proj.bias", "all"),
        ],
        "q": [
            ("model.layers.{L}.self_attn.q_proj.weight", "rows"),
            ("model.layers.{L}.self_attn.q_proj.bias", "rows"),
        ],
        "k": [
            ("model.layers.{L}.self_attn.k_proj.weight", "rows"),
            ("model.layers.{L}.self_attn.k_proj.bias", "rows"),
        ],
        "v": [
            ("model.layers.{L}.self_attn.v_proj.weight", "rows"),
            ("model.layers.{L}.self_attn.v_proj.bias", "rows"),
        ],
        "mlp": [
            ("model.layers.{L}.mlp.gate_proj.weight", "all"),
            ("model.layers.{L}.mlp.up_proj.weight", "all"),
            ("model.layers.{L}.mlp.down_proj.weight", "all"),
            ("model.layers.{L}.mlp.gate_proj.bias", "all"),
            ("model.layers.{L}.mlp.up_proj.bias", "all"),
            ("model.layers.{L}.mlp.down_proj.bias", "all"),
        ],
    },
}
_RULES["mistral"] = _RULES["llama"]
_RULES["qwen2"] = _RULES["llama"]


def projection_weight_name(family: str, which: str, layer: int) -> str | None:
    """The canonical name of layer ``layer``'s q, k or v projection weight (stored ``[out, in]``,
    heads along the rows), or None for a family without a parameter map."""
    rules = _RULES.get(family)
    return None if rules is None else rules[which][0][0].format(L=layer)


@dataclass(frozen=True)
class ParamMap:
    """Node name -> owned parameter slices, plus the parameters themselves (by canonical name)."""

    family: str
    params: dict[str, torch.nn.Parameter] = field(repr=False)
    owned: dict[str, tuple[ParamSlice, ...]] = field(repr=False)

    @property
    def n_model_params(self) -> int:
        return count_unique_params(self.params.values())

    def slices_for(self, nodes) -> list[ParamSlice]:
        """Distinct slices owned by any of ``nodes`` (node names, with or without <q|k|v>)."""
        out: dict[ParamSlice, None] = {}
        for node in nodes:
            if node not in self.owned:
                raise KeyError(f"node {node!r} is not in this model's graph")
            out.update(dict.fromkeys(self.owned[node]))
        return list(out)

    def masks_for(self, nodes) -> dict[str, torch.Tensor]:
        """Boolean masks, one per touched parameter (same shape and device), True where trainable."""
        masks: dict[str, torch.Tensor] = {}
        for piece in self.slices_for(nodes):
            param = self.params[piece.name]
            mask = masks.get(piece.name)
            if mask is None:
                mask = masks[piece.name] = torch.zeros_like(param, dtype=torch.bool)
            if piece.dim is None:
                mask.fill_(True)
            else:
                mask.narrow(piece.dim, piece.start, piece.stop - piece.start).fill_(True)
        return masks

    def count(self, nodes) -> dict[str, int]:
        """``whole``: size of every touched tensor (the paper's "real" count); ``exact``: only the
        owned entries (the "ideal" count, what circuit-tuning really updates)."""
        masks = self.masks_for(nodes)
        return {
            "whole": sum(self.params[name].numel() for name in masks),
            "exact": sum(int(mask.sum()) for mask in masks.values()),
        }


def build_param_map(model, graph: Graph) -> ParamMap:
    """The parameter map of a ``LoadedModel`` for ``graph``'s nodes."""
    family = model.info.family
    if family not in _RULES:
        raise NotImplementedError(
            f"no parameter map for model family {family!r} (supported: {', '.join(sorted(_RULES))}); "
            "circuit discovery works on it, circuit-tuning does not yet"
        )
    rules = _RULES[family]
    params = {canonical_name(n): p for n, p in model.bridge.named_parameters()}
    d_head = model.info.d_head

    def pieces(kind: str, layer: int, head: int | None) -> tuple[ParamSlice, ...]:
        out = []
        for template, rule in rules[kind]:
            name = template.format(L=layer)
            if name not in params:
                continue  # e.g. no bias in this architecture
            if rule == "all":
                out.append(ParamSlice(name))
            else:
                dim = 0 if rule == "rows" else 1
                out.append(ParamSlice(name, dim, head * d_head, (head + 1) * d_head))
        if not out:
            raise RuntimeError(f"no parameters found for {kind} of layer {layer} ({family})")
        return tuple(out)

    owned: dict[str, tuple[ParamSlice, ...]] = {}
    for name in graph.src_names + graph.dst_names:
        ref = parse_node(name, graph.n_layers)
        if ref.kind in ("input", "logits"):
            owned[name] = ()
        elif ref.kind == "mlp" and ref.group is not None:
            owned[name] = _group_pieces(model, params, graph.mlp_groups, ref.layer, ref.group)
        elif ref.kind == "mlp":
            owned[name] = pieces("mlp", ref.layer, None)
        else:
            owned[name] = pieces(ref.qkv or "out", ref.layer, ref.head)
    return ParamMap(family=family, params=params, owned=owned)


def _group_pieces(model, params, n_groups: int, layer: int, group: int) -> tuple[ParamSlice, ...]:
    """The slices neuron group ``group`` of layer ``layer``'s MLP owns (see the module docstring)."""
    from circuitviz.models.mlp import mlp_layout

    d_mlp = model.info.d_mlp
    if d_mlp is None or d_mlp % n_groups:
        raise ValueError(f"mlp_groups={n_groups} does not divide the MLP width {d_mlp}")
    size = d_mlp // n_groups
    out = []
    for template, dim in mlp_layout(model.info.family).owned():
        name = template.format(L=layer)
        if name not in params:
            continue  # e.g. no biases in this architecture
        if dim is None:
            out.append(ParamSlice(name))
        else:
            out.append(ParamSlice(name, dim, group * size, (group + 1) * size))
    return tuple(out)
