"""Node and edge names of the computational graph, and the node lists of a model shape.

This module is the one place where names are formatted and parsed, and it imports no torch, so the
dashboard and the plotting package can describe a graph without loading the engine. Conventions
follow EAP-IG / MIB so that circuit files interoperate:

* Source (writer) nodes, in forward order: ``input`` (token + position embeddings), then per layer
  ``a{L}.h{H}`` for each attention head (its per-head output, before the output bias) followed by
  ``m{L}`` (the MLP output).
* Destination (reader) nodes, per layer: ``a{L}.h{H}<q>`` for every query head, ``a{L}.h{G}<k>`` and
  ``a{L}.h{G}<v>`` for every key/value head (``G`` indexes key/value *groups* under grouped-query
  attention, so with ``n_kv_heads < n_heads`` one k/v node is shared by ``n_heads / n_kv_heads`` query
  heads), then ``m{L}`` (the MLP input); finally ``logits``.
* With ``mlp_groups=G`` every MLP is split into ``G`` groups of ``d_mlp / G`` consecutive neurons,
  each its own source and destination ``m{L}.g{j}`` (j = 0..G-1) in place of ``m{L}`` (the
  circuit-tuning paper's Llama "MLP heads"). A group's output is its neurons' contribution to the
  MLP output; its input is its own reading of the MLP input. Groups of one layer sit side by side:
  none reads another.
* Every node has an *order* in the forward pass; an edge ``src->dst`` is valid when the source's order
  is smaller than the destination's: q/k/v at layer L read ``input`` and every node of layers < L;
  ``m{L}`` also reads the heads of layer L; ``logits`` reads everything.

``paper=True`` is the circuit-tuning paper's graph (``eap_graph_old.py``): no ``input`` and no
``logits`` node.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

INPUT = "input"
LOGITS = "logits"
QKV = ("q", "k", "v")

NodeKind = Literal["input", "head", "mlp", "logits"]


@dataclass(frozen=True)
class NodeRef:
    """A parsed node name. ``head`` is a query-head index, or a key/value group for k/v readers."""

    kind: NodeKind
    layer: int  # -1 for input, n_layers for logits
    head: int | None = None
    qkv: str | None = None  # "q", "k" or "v" for attention readers, else None
    group: int | None = None  # the neuron group of an ``m{L}.g{j}`` node, else None

    @property
    def base(self) -> str:
        """The node name without a ``<q>``/``<k>``/``<v>`` suffix (what a figure draws as one box)."""
        if self.kind == "input":
            return INPUT
        if self.kind == "logits":
            return LOGITS
        if self.kind == "mlp":
            return mlp_name(self.layer, self.group)
        return f"a{self.layer}.h{self.head}"


def head_name(layer: int, head: int) -> str:
    return f"a{layer}.h{head}"


def mlp_name(layer: int, group: int | None = None) -> str:
    """``m{L}`` (a whole MLP), or ``m{L}.g{j}`` (neuron group j of it)."""
    return f"m{layer}" if group is None else f"m{layer}.g{group}"


def reader_name(layer: int, head: int, qkv: str) -> str:
    if qkv not in QKV:
        raise ValueError(f"qkv must be one of {QKV}, got {qkv!r}")
    return f"a{layer}.h{head}<{qkv}>"


def edge_name(src: str, dst: str) -> str:
    return f"{src}->{dst}"


_NODE_RE = re.compile(
    r"^(?:a(?P<al>\d+)\.h(?P<h>\d+)(?:<(?P<qkv>[qkv])>)?|m(?P<ml>\d+)(?:\.g(?P<g>\d+))?"
    r"|input|logits)$"
)


def parse_node(name: str, n_layers: int | None = None) -> NodeRef:
    """Parse ``input``, ``logits``, ``m3``, ``m3.g7``, ``a2.h5`` or ``a2.h5<q>``."""
    match = _NODE_RE.match(name)
    if match is None:
        raise ValueError(
            f"not a node name: {name!r} (expected input, logits, m<L>, m<L>.g<J>, a<L>.h<H> or "
            "a<L>.h<H><q|k|v>)"
        )
    if name == INPUT:
        return NodeRef("input", -1)
    if name == LOGITS:
        return NodeRef("logits", n_layers if n_layers is not None else 10**9)
    if match.group("ml") is not None:
        group = match.group("g")
        return NodeRef("mlp", int(match.group("ml")), group=None if group is None else int(group))
    return NodeRef("head", int(match.group("al")), int(match.group("h")), match.group("qkv"))


def parse_edge(name: str) -> tuple[str, str]:
    src, sep, dst = name.partition("->")
    if not sep or not src or not dst:
        raise ValueError(f"not an edge name: {name!r} (expected '<src>-><dst>')")
    return src, dst


@dataclass(frozen=True)
class NodeLists:
    """Source and destination names of one model shape, with each node's layer and forward order.

    ``src_order[i] < dst_order[j]`` is the validity rule of edge ``i -> j``.
    """

    src_names: tuple[str, ...]
    src_layer: tuple[int, ...]  # input = -1
    src_order: tuple[float, ...]
    dst_names: tuple[str, ...]
    dst_layer: tuple[int, ...]  # logits = n_layers
    dst_order: tuple[float, ...]

    def edge_pairs(self) -> list[tuple[int, int]]:
        """``(src_idx, dst_idx)`` of every valid edge in row-major order: the canonical order of
        every per-edge vector."""
        return [
            (i, j)
            for i, s in enumerate(self.src_order)
            for j, d in enumerate(self.dst_order)
            if s < d
        ]

    def edge_names(self) -> list[str]:
        return [edge_name(self.src_names[i], self.dst_names[j]) for i, j in self.edge_pairs()]


def check_shape(
    n_layers: int, n_heads: int, n_kv_heads: int, mlp_groups: int | None = None
) -> None:
    if n_layers < 1 or n_heads < 1:
        raise ValueError(f"n_layers and n_heads must be >= 1, got {n_layers}, {n_heads}")
    if n_kv_heads < 1 or n_heads % n_kv_heads:
        raise ValueError(f"n_kv_heads must divide n_heads={n_heads}, got {n_kv_heads}")
    if mlp_groups is not None and (
        isinstance(mlp_groups, bool) or not isinstance(mlp_groups, int) or mlp_groups < 1
    ):
        raise ValueError(f"mlp_groups must be None or an integer >= 1, got {mlp_groups!r}")


def mlp_names(layer: int, mlp_groups: int | None = None) -> list[str]:
    """The MLP node names of one layer: ``[m{L}]``, or its groups ``m{L}.g0 .. m{L}.g{G-1}``."""
    if mlp_groups is None:
        return [mlp_name(layer)]
    return [mlp_name(layer, group) for group in range(mlp_groups)]


def node_lists(
    n_layers: int,
    n_heads: int,
    n_kv_heads: int | None = None,
    *,
    paper: bool = False,
    mlp_groups: int | None = None,
) -> NodeLists:
    """The node lists of a model shape (see the module docstring for order and validity)."""
    n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
    check_shape(n_layers, n_heads, n_kv_heads, mlp_groups)
    src: list[tuple[str, int, float]] = [] if paper else [(INPUT, -1, -1.0)]
    for layer in range(n_layers):
        # A head of layer L precedes m{L} (or its groups), which reads it.
        src += [(head_name(layer, head), layer, layer + 0.25) for head in range(n_heads)]
        src += [(name, layer, layer + 0.75) for name in mlp_names(layer, mlp_groups)]
    dst: list[tuple[str, int, float]] = []
    for layer in range(n_layers):
        for qkv, count in (("q", n_heads), ("k", n_kv_heads), ("v", n_kv_heads)):
            dst += [(reader_name(layer, head, qkv), layer, float(layer)) for head in range(count)]
        # Groups of one layer read at L + 0.5 and write at L + 0.75: side by side, none reads another.
        dst += [(name, layer, layer + 0.5) for name in mlp_names(layer, mlp_groups)]
    if not paper:
        dst.append((LOGITS, n_layers, float(n_layers)))
    return NodeLists(
        src_names=tuple(name for name, _, _ in src),
        src_layer=tuple(layer for _, layer, _ in src),
        src_order=tuple(order for _, _, order in src),
        dst_names=tuple(name for name, _, _ in dst),
        dst_layer=tuple(layer for _, layer, _ in dst),
        dst_order=tuple(order for _, _, order in dst),
    )
