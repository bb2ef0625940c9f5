"""The computational graph of a transformer as dense tensors: which edges are causally possible.

Names, their order and the validity rule live in ``circuitviz.graph.names`` (which imports no
torch); this module turns a model shape into the ``Graph`` the engine indexes: ``valid_mask[i, j]``
for source ``i`` and destination ``j``. GPT-2 small has 32,491 valid edges in the EAP-IG convention
and 31,890 in the circuit-tuning paper's (``paper=True``: no ``input`` or ``logits`` node).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from circuitviz.graph.names import (  # noqa: F401  (re-exported: the names API of the graph)
    INPUT,
    LOGITS,
    QKV,
    NodeKind,
    NodeRef,
    edge_name,
    head_name,
    mlp_name,
    mlp_names,
    node_lists,
    parse_edge,
    parse_node,
    reader_name,
)


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
    mlp_groups: int | None = None  # None: one node per MLP; G: G neuron groups per MLP

    @property
    def n_mlp_nodes(self) -> int:
        """MLP nodes per layer: 1, or the number of neuron groups."""
        return 1 if self.mlp_groups is None else self.mlp_groups

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

    def describe(self) -> dict:
        return {
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "n_kv_heads": self.n_kv_heads,
            "paper_graph": self.paper,
            "mlp_groups": self.mlp_groups,
            "n_src": self.n_src,
            "n_dst": self.n_dst,
            "n_nodes": len({parse_node(n).base for n in self.src_names + self.dst_names}),
            "n_edges": self.n_edges,
        }


def build_graph(
    n_layers: int,
    n_heads: int,
    n_kv_heads: int | None = None,
    *,
    paper: bool = False,
    mlp_groups: int | None = None,
) -> Graph:
    """Build the node/edge index for a model with the given shape.

    Accepts the counts directly so that the graph does not depend on how a model was loaded; use
    ``graph_for(model_info)`` for a loaded model (it also checks that G divides the MLP width).
    """
    nodes = node_lists(n_layers, n_heads, n_kv_heads, paper=paper, mlp_groups=mlp_groups)
    valid_mask = torch.tensor(nodes.src_order)[:, None] < torch.tensor(nodes.dst_order)[None, :]
    return Graph(
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=n_heads if n_kv_heads is None else n_kv_heads,
        paper=paper,
        src_names=nodes.src_names,
        dst_names=nodes.dst_names,
        valid_mask=valid_mask,
        src_layer=torch.tensor(nodes.src_layer),
        dst_layer=torch.tensor(nodes.dst_layer),
        mlp_groups=mlp_groups,
    )


def graph_for(info, *, paper: bool = False, mlp_groups: int | None = None) -> Graph:
    """The graph of a loaded model (anything with ``n_layers``, ``n_heads``, ``n_kv_heads`` and,
    for ``mlp_groups``, ``d_mlp``). Raises ValueError when G does not divide the MLP width."""
    if mlp_groups is not None:
        d_mlp = getattr(info, "d_mlp", None)
        if not isinstance(mlp_groups, int) or isinstance(mlp_groups, bool) or mlp_groups < 1:
            raise ValueError(f"mlp_groups must be None or an integer >= 1, got {mlp_groups!r}")
        if d_mlp is not None and d_mlp % mlp_groups:
            divisors = [g for g in range(1, min(d_mlp, 256) + 1) if d_mlp % g == 0]
            raise ValueError(
                f"mlp_groups={mlp_groups} does not divide the MLP width {d_mlp}; choose one of "
                f"{divisors}"
            )
    return build_graph(
        info.n_layers, info.n_heads, info.n_kv_heads, paper=paper, mlp_groups=mlp_groups
    )
