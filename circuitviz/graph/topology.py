"""The computational graph of a transformer: nodes, edges and which edges are causally possible.

Conventions follow EAP-IG / MIB so that circuit files interoperate:

* Source (writer) nodes, in forward order: ``input`` (token + position embeddings), then per layer
  ``a{L}.h{H}`` for each attention head (its per-head output, before the output bias) followed by
  ``m{L}`` (the MLP output).
* Destination (reader) nodes, per layer: ``a{L}.h{H}<q>`` for every query head, ``a{L}.h{G}<k>`` and
  ``a{L}.h{G}<v>`` for every key/value head (``G`` indexes key/value *groups* under grouped-query
  attention, so with ``n_kv_heads < n_heads`` one k/v node is shared by ``n_heads / n_kv_heads`` query
  heads), then ``m{L}`` (the MLP input); finally ``logits``.
* An edge ``src->dst`` is valid when the source writes into the residual stream before the destination
  reads it: q/k/v at layer L read ``input`` and every node of layers < L; ``m{L}`` also reads the heads
  of layer L; ``logits`` reads everything.

``paper=True`` reproduces the circuit-tuning paper's graph (``eap_graph_old.py``): no ``input`` and no
``logits`` node. GPT-2 small has 32,491 valid edges in the EAP-IG convention and 31,890 in the paper's.

Names are parsed and formatted here and nowhere else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

import torch

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

    @property
    def base(self) -> str:
        """The node name without a ``<q>``/``<k>``/``<v>`` suffix (what a figure draws as one box)."""
        if self.kind == "input":
            return INPUT
        if self.kind == "logits":
            return LOGITS
        if self.kind == "mlp":
            return f"m{self.layer}"
        return f"a{self.layer}.h{self.head}"


def head_name(layer: int, head: int) -> str:
    return f"a{layer}.h{head}"


def mlp_name(layer: int) -> str:
    return f"m{layer}"


def reader_name(layer: int, head: int, qkv: str) -> str:
    if qkv not in QKV:
        raise ValueError(f"qkv must be one of {QKV}, got {qkv!r}")
    return f"a{layer}.h{head}<{qkv}>"


def edge_name(src: str, dst: str) -> str:
    return f"{src}->{dst}"


_NODE_RE = re.compile(
    r"^(?:a(?P<al>\d+)\.h(?P<h>\d+)(?:<(?P<qkv>[qkv])>)?|m(?P<ml>\d+)|input|logits)$"
)


def parse_node(name: str, n_layers: int | None = None) -> NodeRef:
    """Parse ``input``, ``logits``, ``m3``, ``a2.h5`` or ``a2.h5<q>``."""
    match = _NODE_RE.match(name)
    if match is None:
        raise ValueError(
            f"not a node name: {name!r} (expected input, logits, m<L>, a<L>.h<H> or a<L>.h<H><q|k|v>)"
        )
    if name == INPUT:
        return NodeRef("input", -1)
    if name == LOGITS:
        return NodeRef("logits", n_layers if n_layers is not None else 10**9)
    if match.group("ml") is not None:
        return NodeRef("mlp", int(match.group("ml")))
    return NodeRef("head", int(match.group("al")), int(match.group("h")), match.group("qkv"))


def parse_edge(name: str) -> tuple[str, str]:
    src, sep, dst = name.partition("->")
    if not sep or not src or not dst:
        raise ValueError(f"not an edge name: {name!r} (expected '<src>-><dst>')")
    return src, dst


@dataclass(frozen=True)
class Graph:
    """Node and edge index of one model. Scores live in dense ``[n_src, n_dst]`` tensors elsewhere;
    ``valid_mask[i, j]`` says whether source ``i`` can reach destination ``j``."""

    n_layers: int
    n_heads: int
    n_kv_heads: int
    paper: bool
    src_names: tuple[str, ...]
    dst_names: tuple[str, ...]
    valid_mask: torch.Tensor = field(repr=False)  # [n_src, n_dst] bool
    src_layer: torch.Tensor = field(repr=False)  # [n_src] long; input = -1
    dst_layer: torch.Tensor = field(repr=False)  # [n_dst] long; logits = n_layers

    @property
    def n_src(self) -> int:
        return len(self.src_names)

    @property
    def n_dst(self) -> int:
        return len(self.dst_names)

    @property
    def n_edges(self) -> int:
        return int(self.valid_mask.sum())

    @property
    def has_input(self) -> bool:
        return not self.paper

    def src_index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.src_names)}

    def dst_index(self) -> dict[str, int]:
        return {name: j for j, name in enumerate(self.dst_names)}

    def edge_index(self) -> torch.Tensor:
        """``[n_edges, 2]`` (src_idx, dst_idx) of every valid edge, in row-major order. This order is
        the canonical order of any per-edge vector (``scores[valid_mask]``)."""
        return self.valid_mask.nonzero()

    def edge_names(self) -> list[str]:
        return [
            edge_name(self.src_names[i], self.dst_names[j]) for i, j in self.edge_index().tolist()
        ]

    def src_slice_of_layer(self, layer: int) -> slice:
        """Source indices of layer ``layer``'s heads and MLP."""
        start = (0 if self.paper else 1) + layer * (self.n_heads + 1)
        return slice(start, start + self.n_heads + 1)

    def dst_slice_of_layer(self, layer: int) -> slice:
        """Destination indices of layer ``layer``: q heads, k groups, v groups, MLP."""
        width = self.n_heads + 2 * self.n_kv_heads + 1
        return slice(layer * width, (layer + 1) * width)

    def describe(self) -> dict:
        return {
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "n_kv_heads": self.n_kv_heads,
            "paper_graph": self.paper,
            "n_src": self.n_src,
            "n_dst": self.n_dst,
            "n_nodes": len({parse_node(n).base for n in self.src_names + self.dst_names}),
            "n_edges": self.n_edges,
        }


def build_graph(
    n_layers: int, n_heads: int, n_kv_heads: int | None = None, *, paper: bool = False
) -> Graph:
    """Build the node/edge index for a model with the given shape.

    Accepts the counts directly so that the graph does not depend on how a model was loaded; use
    ``graph_for(model_info)`` for a loaded model.
    """
    n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
    if n_layers < 1 or n_heads < 1:
        raise ValueError(f"n_layers and n_heads must be >= 1, got {n_layers}, {n_heads}")
    if n_kv_heads < 1 or n_heads % n_kv_heads:
        raise ValueError(f"n_kv_heads must divide n_heads={n_heads}, got {n_kv_heads}")

    src_names: list[str] = [] if paper else [INPUT]
    src_layer: list[int] = [] if paper else [-1]
    # Position of each source in forward order; a head of layer L precedes m{L}.
    src_order: list[float] = [] if paper else [-1.0]
    for layer in range(n_layers):
        for head in range(n_heads):
            src_names.append(head_name(layer, head))
            src_layer.append(layer)
            src_order.append(layer + 0.25)
        src_names.append(mlp_name(layer))
        src_layer.append(layer)
        src_order.append(layer + 0.75)

    dst_names: list[str] = []
    dst_layer: list[int] = []
    dst_order: list[float] = []  # a destination reads every source with a smaller order
    for layer in range(n_layers):
        for qkv, count in (("q", n_heads), ("k", n_kv_heads), ("v", n_kv_heads)):
            for head in range(count):
                dst_names.append(reader_name(layer, head, qkv))
                dst_layer.append(layer)
                dst_order.append(layer + 0.0)
        dst_names.append(mlp_name(layer))
        dst_layer.append(layer)
        dst_order.append(layer + 0.5)
    if not paper:
        dst_names.append(LOGITS)
        dst_layer.append(n_layers)
        dst_order.append(float(n_layers))

    valid_mask = torch.tensor(src_order)[:, None] < torch.tensor(dst_order)[None, :]
    return Graph(
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        paper=paper,
        src_names=tuple(src_names),
        dst_names=tuple(dst_names),
        valid_mask=valid_mask,
        src_layer=torch.tensor(src_layer),
        dst_layer=torch.tensor(dst_layer),
    )


def graph_for(info, *, paper: bool = False) -> Graph:
    """The graph of a loaded model (anything with ``n_layers``, ``n_heads``, ``n_kv_heads``)."""
    return build_graph(info.n_layers, info.n_heads, info.n_kv_heads, paper=paper)
