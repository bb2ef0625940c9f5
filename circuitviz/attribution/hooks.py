"""Where each graph node lives in the TransformerBridge, and the small hook plumbing all methods share.

The graph (``circuitviz.graph.topology``) fixes names and order; this module maps its index ranges to
bridge hook points (canonical names; ``hook.name`` inside a hook is canonical too):

* sources: ``input`` -> ``blocks.0.hook_in`` (embeddings, plus positions on GPT-2), ``a{L}.h*`` ->
  ``blocks.{L}.attn.hook_result`` ``[batch, pos, head, d_model]`` (per-head output without the
  output bias), ``m{L}`` -> ``blocks.{L}.mlp.hook_out``;
* destinations: ``a{L}.h*<q|k|v>`` -> ``blocks.{L}.attn.hook_{q,k,v}_input``
  ``[batch, pos, head or kv_head, d_model]``, ``m{L}`` -> ``blocks.{L}.hook_mlp_in``, ``logits`` ->
  ``blocks.{L-1}.hook_out`` (the last residual stream, before the final LayerNorm).
* MLP neuron groups ``m{L}.g*`` (``circuitviz.models.mlp``): as sources they are read at
  ``blocks.{L}.mlp.hook_post`` (the hidden activation ``[batch, pos, d_mlp]``), turned into each
  group's contribution ``[group, batch, pos, d_model]``, and written back (EAP-IG's pinning) at
  ``blocks.{L}.mlp.hook_out``. As destinations, the MLP input at ``blocks.{L}.hook_mlp_in`` is
  copied once per group, ``[batch, pos, group, d_model]`` (shaped like a per-head input), each copy
  is normalised by the MLP's own norm, and the hooks on the input (and gate) projection outputs,
  ``blocks.{L}.mlp.in.hook_out`` / ``mlp.gate.hook_out``, are replaced by each group's projection of
  its own copy. The value is the ordinary MLP's; the gradient of each copy is its group's alone.

Every valid source of a destination comes before it in source order, so the sources a destination
reads are always the prefix ``[:n_up]`` of the source axis; ``dest_hooks`` checks that.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache

import torch
from einops import einsum, rearrange

from circuitviz.graph.topology import Graph, parse_node

ROOT_HOOK = "blocks.0.hook_in"

Hook = Callable  # (tensor, hook) -> tensor | None, as TransformerLens calls it


@dataclass(frozen=True)
class SourceHook:
    """A bridge hook whose output fills rows ``src_slice`` of a ``[n_src, batch, pos, d_model]``
    buffer. ``per_head`` hooks give ``[batch, pos, head, d_model]``, the others ``[batch, pos,
    d_model]``; MLP-group hooks (``groups`` set) read the MLP's hidden activation and turn it into
    each group's contribution (see the module docstring)."""

    hook_name: str
    src_slice: slice
    per_head: bool
    groups: object | None = field(default=None, compare=False, repr=False)  # models.mlp.MLPGroups
    layer: int = -1

    @property
    def write_hook(self) -> str:
        """The hook where a changed value of these sources is written back."""
        return self.hook_name if self.groups is None else f"blocks.{self.layer}.mlp.hook_out"

    def node_major(self, x: torch.Tensor) -> torch.Tensor:
        """This hook's tensor as ``[n, batch, pos, d_model]`` rows of the source buffer."""
        if self.groups is not None:
            return self.groups.contributions(self.layer, x)
        return as_node_major(x, self.per_head)


@dataclass(frozen=True)
class DestHook:
    """A bridge hook whose input is read by destinations ``dst_slice``; sources ``[:n_up]`` feed it.
    MLP-group destinations (``groups`` set) read per-group copies of the MLP input, shaped like a
    per-head input ``[batch, pos, group, d_model]`` (``per_head`` is True); ``input_hooks`` builds
    the hooks that make those copies."""

    hook_name: str
    dst_slice: slice
    n_up: int
    per_head: bool
    groups: object | None = field(default=None, compare=False, repr=False)  # models.mlp.MLPGroups
    layer: int = -1


def input_hooks(
    spec: DestHook,
    transform: Callable[[torch.Tensor], torch.Tensor],
    mark: Callable[[str], None] = lambda name: None,
) -> list[tuple[str, Hook]]:
    """Forward hooks that hand destination ``spec``'s input to ``transform`` (which may register a
    gradient hook on it, or change it) and feed the result on. ``mark(hook_name)`` is called as each
    hook fires. For MLP groups the input is copied per group, ``transform`` sees the copies
    ``[batch, pos, group, d_model]``, and the projections are recomputed from them."""
    if spec.groups is None:

        def hook(x, hook):
            mark(spec.hook_name)
            return transform(x)

        return [(spec.hook_name, hook)]
    groups, layer = spec.groups, spec.layer
    normed: dict[str, torch.Tensor] = {}

    def at_input(x, hook):
        copies = x.unsqueeze(-2).expand(*x.shape[:-1], groups.n_groups, x.shape[-1])
        normed["value"] = groups.normalize(layer, transform(copies))
        mark(spec.hook_name)
        return x  # the MLP's own input is untouched; its projections are replaced below

    def projection(which: str, name: str):
        def hook(x, hook):
            mark(name)
            return groups.pre_activation(layer, normed["value"], which)

        return hook

    hooks = [(spec.hook_name, at_input)]
    names = [("in", f"blocks.{layer}.mlp.in.hook_out")]
    if groups.gated:
        names.append(("gate", f"blocks.{layer}.mlp.gate.hook_out"))
    hooks += [(name, projection(which, name)) for which, name in names]
    return hooks


def hook_names(hooks: list[tuple[str, Hook]]) -> list[str]:
    return [name for name, _ in hooks]


@lru_cache(maxsize=64)  # a pure function of the names, asked on every attribution pass
def _runs(names: tuple[str, ...], n_layers: int) -> tuple[tuple[str, str, int, int], ...]:
    """Group consecutive names of one kind and layer: ``(kind, layer, start, stop)``, where kind is
    input, head, mlp, logits, q, k or v. Heads (and MLP groups) must come in order, as the bridge
    lays them out."""
    runs: list[list] = []
    for idx, name in enumerate(names):
        ref = parse_node(name, n_layers)
        key = (ref.qkv or ref.kind, str(ref.layer))
        if runs and runs[-1][0] == key:
            runs[-1][2] = idx + 1
        else:
            runs.append([key, idx, idx + 1])
        index = ref.head if ref.head is not None else ref.group
        if index is not None and index != idx - runs[-1][1]:
            raise ValueError(f"graph node {name!r} at index {idx} is out of head order")
    return tuple((key[0], key[1], start, stop) for key, start, stop in runs)


def mlp_groups_of(graph: Graph, model) -> object | None:
    """The grouped MLP weights a graph with ``mlp_groups`` needs (None for whole-MLP graphs)."""
    if graph.mlp_groups is None:
        return None
    if model is None:
        raise ValueError("this graph splits MLPs into neuron groups: pass the model to the hooks")
    from circuitviz.models.mlp import build_mlp_groups

    return build_mlp_groups(model, graph.mlp_groups)


def source_hooks(graph: Graph, model=None) -> list[SourceHook]:
    """One entry per bridge hook that writes source activations, in forward order. ``model`` is
    needed only when the graph has MLP groups."""
    groups = mlp_groups_of(graph, model)
    hooks = []
    for kind, layer, start, stop in _runs(graph.src_names, graph.n_layers):
        if kind == "input":
            name, per_head = ROOT_HOOK, False
        elif kind == "head":
            name, per_head = f"blocks.{layer}.attn.hook_result", True
        elif kind == "mlp" and groups is not None:
            spec = SourceHook(
                f"blocks.{layer}.mlp.hook_post", slice(start, stop), True, groups, int(layer)
            )
            hooks.append(spec)
            continue
        elif kind == "mlp":
            name, per_head = f"blocks.{layer}.mlp.hook_out", False
        else:
            raise ValueError(f"unexpected source kind {kind!r} in graph")
        hooks.append(SourceHook(name, slice(start, stop), per_head))
    return hooks


def dest_hooks(graph: Graph, model=None) -> list[DestHook]:
    """One entry per bridge hook whose input destinations read, in forward order (destinations
    with no valid source are left out). ``model`` is needed only when the graph has MLP groups."""
    groups = mlp_groups_of(graph, model)
    hooks = []
    for kind, layer, start, stop in _runs(graph.dst_names, graph.n_layers):
        extra: tuple = ()
        if kind in ("q", "k", "v"):
            name, per_head = f"blocks.{layer}.attn.hook_{kind}_input", True
        elif kind == "mlp" and groups is not None:
            name, per_head, extra = f"blocks.{layer}.hook_mlp_in", True, (groups, int(layer))
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
            hooks.append(DestHook(name, slice(start, stop), n_up, per_head, *extra))
    return hooks


HOOK_FLAGS = ("use_attn_result", "use_split_qkv_input", "use_hook_mlp_in")


@contextmanager
def hook_flags(bridge, enabled: bool) -> Iterator[None]:
    """Switch the bridge's three attribution hook flags for the duration. Training and evaluation
    run with them off (they only add copies and cost 27-84% per pass); attribution needs them on,
    except the replay of target positions (``replay``), which reads none of their hooks."""
    saved = {name: bool(getattr(bridge.cfg, name)) for name in HOOK_FLAGS}
    _set_flags(bridge, dict.fromkeys(HOOK_FLAGS, enabled))
    try:
        yield
    finally:
        _set_flags(bridge, saved)


def _set_flags(bridge, flags: dict[str, bool]) -> None:
    # Each setter walks the bridge's modules: only those that change are called.
    for name, setter in (
        ("use_attn_result", bridge.set_use_attn_result),
        ("use_split_qkv_input", bridge.set_use_split_qkv_input),
        ("use_hook_mlp_in", bridge.set_use_hook_mlp_in),
    ):
        if bool(getattr(bridge.cfg, name)) != flags[name]:
            setter(flags[name])


@contextmanager
def plain_hooks(bridge, hooks: list[tuple[str, Hook]]) -> Iterator[None]:
    """Read-only forward hooks ``fn(x, None)`` on the bridge's hook points by their module paths,
    registered as plain PyTorch hooks for the duration: without ``bridge.hooks``'s name
    resolution, aliasing and shape conversion (``x`` is the tensor as the module passes it on, e.g.
    ``[batch, pos, head * d_head]`` where a converted hook would see ``[batch, pos, head,
    d_head]``). A fraction of the cost per hook, for passes that only read."""
    handles = []
    try:
        for name, fn in hooks:
            point = bridge.get_submodule(name)
            handles.append(point.register_forward_hook(lambda _m, _i, out, fn=fn: fn(out, None)))
        yield
    finally:
        for handle in handles:
            handle.remove()


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
def qkv_copies(bridge, enabled: bool) -> Iterator[None]:
    """The bridge's per-head copies of the q/k/v inputs (``use_split_qkv_input``) on or off for
    the duration; restored afterwards, even on error."""
    before = bool(bridge.cfg.use_split_qkv_input)
    if before != enabled:
        bridge.set_use_split_qkv_input(enabled)
    try:
        yield
    finally:
        if before != enabled:
            bridge.set_use_split_qkv_input(before)


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
    model=None,
) -> tuple[list, FiredCheck]:
    """Forward hooks that remove the edges marked in ``ablated`` ([n_src, n_dst], in the model's
    dtype): each source hook hands its node-major activation ``[n, batch, pos, d_model]`` to
    ``record(spec, rows)``, which keeps its difference from the baseline; each destination with an
    ablated incoming edge subtracts ``upstream(n_up)`` (those differences of the first ``n_up``
    sources) contracted with its block of ``ablated``, so it sees the baseline along ablated edges.
    A destination that keeps all its edges gets no hook and stays bit-identical. Callers choose how
    differences are stored (a buffer written in place under no-grad, a list when autograd runs).
    ``model`` is needed only when the graph has MLP groups."""

    def store(spec):
        def hook(x, hook):
            record(spec, spec.node_major(x))
            fired.mark(spec.hook_name)

        return hook

    def remove(spec, block):
        if spec.per_head:
            pattern = "n_src batch pos d_model, n_src head -> batch pos head d_model"
        else:
            pattern, block = "n_src batch pos d_model, n_src -> batch pos d_model", block[:, 0]
        return lambda x: x - einsum(upstream(spec.n_up), block, pattern)

    fwd = [(spec.hook_name, store(spec)) for spec in source_hooks(graph, model)]
    for spec in dest_hooks(graph, model):
        block = ablated[: spec.n_up, spec.dst_slice]
        if bool(block.any()):
            fwd += input_hooks(spec, remove(spec, block), lambda name: fired.mark(name))
    fired = FiredCheck(hook_names(fwd))
    return fwd, fired
