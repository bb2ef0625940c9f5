"""Where each graph node lives in the TransformerBridge, and the small hook plumbing all methods share.

The graph (``circuitviz.graph.topology``) fixes names and order; this module maps its index ranges to
bridge hook points (canonical names; ``hook.name`` inside a hook is canonical too):

* sources: ``input`` -> ``blocks.0.hook_in`` (embeddings, plus positions on GPT-2), ``a{L}.h*`` ->
  ``blocks.{L}.attn.hook_result`` ``[batch, pos, head, d_model]`` (per-head output without the
  output bias), ``m{L}`` -> ``blocks.{L}.mlp.hook_out``;
* destinations: ``a{L}.h*<q|k|v>`` -> ``blocks.{L}.attn.hook_{q,k,v}_input``
  ``[batch, pos, head or kv_head, d_model]``, ``m{L}`` -> ``blocks.{L}.hook_mlp_in``, ``logits`` ->
  ``blocks.{L-1}.hook_out`` (the last residual stream, before the final LayerNorm).

Every valid source of a destination comes before it in source order, so the sources a destination
reads are always the prefix ``[:n_up]`` of the source axis; ``dest_hooks`` checks that.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from einops import einsum, rearrange

from circuitviz.graph.topology import Graph, parse_node

ROOT_HOOK = "blocks.0.hook_in"


@dataclass(frozen=True)
class SourceHook:
    """A bridge hook whose output fills rows ``src_slice`` of a ``[n_src, batch, pos, d_model]``
    buffer. ``per_head`` hooks give ``[batch, pos, head, d_model]``, the others ``[batch, pos,
    d_model]``."""

    hook_name: str
    src_slice: slice
    per_head: bool


@dataclass(frozen=True)
class DestHook:
    """A bridge hook whose input is read by destinations ``dst_slice``; sources ``[:n_up]`` feed it."""

    hook_name: str
    dst_slice: slice
    n_up: int
    per_head: bool


def _runs(names: tuple[str, ...], n_layers: int) -> list[tuple[str, str, int, int]]:
    """Group consecutive names of one kind and layer: ``(kind, layer, start, stop)``, where kind is
    input, head, mlp, logits, q, k or v. Heads must come in head order, as the bridge lays them out."""
    runs: list[list] = []
    for idx, name in enumerate(names):
        ref = parse_node(name, n_layers)
        key = (ref.qkv or ref.kind, str(ref.layer))
        if runs and runs[-1][0] == key:
            runs[-1][2] = idx + 1
        else:
            runs.append([key, idx, idx + 1])
        if ref.head is not None and ref.head != idx - runs[-1][1]:
            raise ValueError(f"graph node {name!r} at index {idx} is out of head order")
    return [(key[0], key[1], start, stop) for key, start, stop in runs]


def source_hooks(graph: Graph) -> list[SourceHook]:
    """One entry per bridge hook that writes source activations, in forward order."""
    hooks = []
    for kind, layer, start, stop in _runs(graph.src_names, graph.n_layers):
        if kind == "input":
            name, per_head = ROOT_HOOK, False
        elif kind == "head":
            name, per_head = f"blocks.{layer}.attn.hook_result", True
        elif kind == "mlp":
            name, per_head = f"blocks.{layer}.mlp.hook_out", False
        else:
            raise ValueError(f"unexpected source kind {kind!r} in graph")
        hooks.append(SourceHook(name, slice(start, stop), per_head))
    return hooks


def dest_hooks(graph: Graph) -> list[DestHook]:
    """One entry per bridge hook whose input destinations read, in forward order (destinations
    with no valid source are left out)."""
    hooks = []
    for kind, layer, start, stop in _runs(graph.dst_names, graph.n_layers):
        if kind in ("q", "k", "v"):
            name, per_head = f"blocks.{layer}.attn.hook_{kind}_input", True
        elif kind == "mlp":
            name, per_head = f"blocks.{layer}.hook_mlp_in", False
        elif kind == "logits":
            name, per_head = f"blocks.{graph.n_layers - 1}.hook_out", False
        else:
            raise ValueError(f"unexpected destination kind {kind!r} in graph")
        column = graph.valid_mask[:, start]
        n_up = int(column.sum())
        block = graph.valid_mask[:, start:stop]
        if not bool(block[:n_up].all()) or bool(block[n_up:].any()):
            raise ValueError(
                f"sources of {graph.dst_names[start]!r} are not a prefix of the sources"
            )
        if n_up:  # the paper graph's layer-0 q/k/v read nothing: no edges, no hook
            hooks.append(DestHook(name, slice(start, stop), n_up, per_head))
    return hooks


class FiredCheck:
    """Records which hooks ran, so a hook that silently never fires fails loudly instead."""

    def __init__(self, expected: list[str]) -> None:
        self.expected = list(expected)
        self.fired: set[str] = set()

    def mark(self, name: str) -> None:
        self.fired.add(name)

    def verify(self, what: str) -> None:
        missing = [name for name in self.expected if name not in self.fired]
        if missing:
            raise RuntimeError(
                f"{what}: bridge hooks never fired: {missing}. The bridge needs use_attn_result, "
                "use_split_qkv_input and use_hook_mlp_in on (circuitviz.models.load_model sets them)."
            )
        self.fired.clear()


@contextmanager
def frozen_parameters(module: torch.nn.Module, enabled: bool = True) -> Iterator[None]:
    """Turn off ``requires_grad`` on every parameter for the duration, so a backward pass computes
    activation gradients only; restore the flags afterwards, even on error."""
    if not enabled:
        yield
        return
    changed = [p for p in module.parameters() if p.requires_grad]
    for param in changed:
        param.requires_grad_(False)
    try:
        yield
    finally:
        for param in changed:
            param.requires_grad_(True)


def as_node_major(activation: torch.Tensor, per_head: bool) -> torch.Tensor:
    """``[batch, pos, head, d_model]`` or ``[batch, pos, d_model]`` -> ``[n, batch, pos, d_model]``."""
    if per_head:
        return rearrange(activation, "batch pos head d_model -> head batch pos d_model")
    return activation.unsqueeze(0)


def edge_ablation_hooks(
    graph: Graph,
    ablated: torch.Tensor,
    record: Callable[[SourceHook, torch.Tensor], None],
    upstream: Callable[[int], torch.Tensor],
) -> tuple[list, FiredCheck]:
    """Forward hooks that remove the edges marked in ``ablated`` ([n_src, n_dst], in the model's
    dtype): each source hook hands its node-major activation ``[n, batch, pos, d_model]`` to
    ``record(spec, rows)``, which keeps its difference from the baseline; each destination with an
    ablated incoming edge subtracts ``upstream(n_up)`` (those differences of the first ``n_up``
    sources) contracted with its block of ``ablated``, so it sees the baseline along ablated edges.
    A destination that keeps all its edges gets no hook and stays bit-identical. Callers choose how
    differences are stored (a buffer written in place under no-grad, a list when autograd runs)."""

    def store(spec):
        def hook(x, hook):
            record(spec, as_node_major(x, spec.per_head))
            fired.mark(spec.hook_name)

        return hook

    def remove(spec, block):
        if spec.per_head:
            pattern = "n_src batch pos d_model, n_src head -> batch pos head d_model"
        else:
            pattern, block = "n_src batch pos d_model, n_src -> batch pos d_model", block[:, 0]

        def hook(x, hook):
            fired.mark(spec.hook_name)
            return x - einsum(upstream(spec.n_up), block, pattern)

        return hook

    fwd = [(spec.hook_name, store(spec)) for spec in source_hooks(graph)]
    for spec in dest_hooks(graph):
        block = ablated[: spec.n_up, spec.dst_slice]
        if bool(block.any()):
            fwd.append((spec.hook_name, remove(spec, block)))
    fired = FiredCheck([name for name, _ in fwd])
    return fwd, fired
