"""Circuits: choosing one from edge scores (without touching the scores), and pruning it.

A ``Circuit`` is an edge mask ``[n_src, n_dst]`` (a subset of ``graph.valid_mask``) plus the node
masks it implies: a source is in the circuit when one of its outgoing edges is, a destination when
one of its incoming edges is. ``select(scores, graph, SelectionConfig)`` is the entry point; the rule
itself lives in ``circuitviz.graph.selection`` (torch-free, shared with the dashboard). Selections:

* ``top_n``: the N valid edges with the largest |score| (or score);
* ``threshold``: every valid edge with |score| (or score) >= a value;
* ``node_weighted``: the circuit-tuning paper's ``top_nodes_new``: rank edge (i, j) by
  |s_ij| * sum_j' |s_ij'| * sum_i' |s_i'j|, then keep the top N;
* ``prune_dead_ends``: drop edges on no input -> logits path of the circuit;
* ``random_circuit``: N valid edges drawn uniformly with a seed (the contrast for faithfulness).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from circuitviz.graph.selection import SelectionConfig, select_edges
from circuitviz.graph.topology import Graph, edge_name, parse_node


@dataclass(frozen=True, kw_only=True)
class Circuit:
    """Edges and nodes of a circuit in ``graph``. Build one with ``Circuit.from_edge_mask``."""

    graph: Graph = field(repr=False)
    edge_mask: torch.Tensor = field(repr=False)  # [n_src, n_dst] bool
    src_mask: torch.Tensor = field(repr=False)  # [n_src] bool
    dst_mask: torch.Tensor = field(repr=False)  # [n_dst] bool

    def __post_init__(self) -> None:
        shape = (self.graph.n_src, self.graph.n_dst)
        for name, value, want in (
            ("edge_mask", self.edge_mask, shape),
            ("src_mask", self.src_mask, shape[:1]),
            ("dst_mask", self.dst_mask, shape[1:]),
        ):
            if value.dtype != torch.bool or tuple(value.shape) != want:
                raise ValueError(
                    f"Circuit.{name} must be a bool tensor of shape {want}, got {value.dtype} "
                    f"{tuple(value.shape)}"
                )
        invalid = self.edge_mask & ~self.graph.valid_mask
        if bool(invalid.any()):
            i, j = invalid.nonzero()[0].tolist()
            raise ValueError(
                f"Circuit.edge_mask contains an invalid edge "
                f"{edge_name(self.graph.src_names[i], self.graph.dst_names[j])!r}"
            )
        if not torch.equal(self.src_mask, self.edge_mask.any(1)) or not torch.equal(
            self.dst_mask, self.edge_mask.any(0)
        ):
            raise ValueError("Circuit node masks disagree with its edge mask; use from_edge_mask")

    @classmethod
    def from_edge_mask(cls, graph: Graph, edge_mask: torch.Tensor) -> Circuit:
        edge_mask = edge_mask.to(device="cpu", dtype=torch.bool)
        return cls(
            graph=graph, edge_mask=edge_mask, src_mask=edge_mask.any(1), dst_mask=edge_mask.any(0)
        )

    @property
    def n_edges(self) -> int:
        return int(self.edge_mask.sum())

    def edge_names(self) -> list[str]:
        return [
            edge_name(self.graph.src_names[i], self.graph.dst_names[j])
            for i, j in self.edge_mask.nonzero().tolist()
        ]

    def node_mask(self) -> dict[str, bool]:
        """Every base node of the graph (``input``, ``a0.h1``, ``m0``, ``logits``) -> in circuit.
        A head is in when any of its output, q, k or v parts is."""
        mask: dict[str, bool] = {}
        names = self.graph.src_names + self.graph.dst_names
        flags = self.src_mask.tolist() + self.dst_mask.tolist()
        for name, flag in zip(names, flags):
            base = parse_node(name).base
            mask[base] = mask.get(base, False) or flag
        return mask

    def nodes(self) -> list[str]:
        return [name for name, flag in self.node_mask().items() if flag]


def full_circuit(graph: Graph) -> Circuit:
    return Circuit.from_edge_mask(graph, graph.valid_mask.clone())


def empty_circuit(graph: Graph) -> Circuit:
    return Circuit.from_edge_mask(graph, torch.zeros_like(graph.valid_mask))


def _edge_vector(scores: torch.Tensor, graph: Graph) -> np.ndarray:
    """``[n_edges]`` float64 scores of the valid edges in canonical order."""
    if tuple(scores.shape) != (graph.n_src, graph.n_dst):
        raise ValueError(
            f"scores must be [n_src, n_dst] = {(graph.n_src, graph.n_dst)}, got {tuple(scores.shape)}"
        )
    return scores.detach().to("cpu", torch.float64)[graph.valid_mask].numpy()


def _edge_endpoints(graph: Graph) -> tuple[np.ndarray, np.ndarray]:
    index = graph.edge_index().numpy()
    return index[:, 0], index[:, 1]


def circuit_of_edges(graph: Graph, edges: np.ndarray) -> Circuit:
    """The circuit made of the given valid-edge indices (canonical order)."""
    flat = torch.zeros(graph.n_edges, dtype=torch.bool)
    flat[torch.as_tensor(np.asarray(edges, dtype=np.int64))] = True
    mask = torch.zeros_like(graph.valid_mask)
    mask[graph.valid_mask] = flat
    return Circuit.from_edge_mask(graph, mask)


def select(scores: torch.Tensor, graph: Graph, config: SelectionConfig) -> Circuit:
    """The circuit ``config`` keeps from ``scores [n_src, n_dst]``: the one selection entry point
    of discovery and tuning (the dashboard applies the same rule through ``graph.selection``).
    Raises ValueError when N exceeds the graph or a score is NaN (a diverged attribution).

    >>> import torch
    >>> import circuitviz as cv
    >>> graph = cv.graph_for(cv.load_model("demo"))
    >>> scores = torch.randn(graph.n_src, graph.n_dst) * graph.valid_mask
    >>> cv.select(scores, graph, cv.SelectionConfig(top_n=10)).n_edges
    10
    """
    vector = _edge_vector(scores, graph)
    if np.isnan(vector).any():
        raise ValueError(
            f"{int(np.isnan(vector).sum())} edge scores are NaN: the attribution diverged "
            "(try float32 instead of bfloat16, or check the task's examples)"
        )
    config.check_fits(graph.n_edges)
    return circuit_of_edges(graph, config.select(vector, *_edge_endpoints(graph)))


def top_n(scores: torch.Tensor, graph: Graph, n: int, *, absolute: bool = True) -> Circuit:
    """The ``n`` valid edges with the largest |score| (``absolute``) or largest signed score."""
    edges = select_edges(_edge_vector(scores, graph), top_n=n, absolute=absolute)
    return circuit_of_edges(graph, edges)


def threshold(
    scores: torch.Tensor, graph: Graph, value: float, *, absolute: bool = True
) -> Circuit:
    """Every valid edge whose |score| (``absolute``) or signed score is at least ``value``."""
    vector = _edge_vector(scores, graph)
    if absolute:
        return circuit_of_edges(graph, select_edges(vector, threshold=value))
    # A signed threshold may be negative, which select_edges' |score| rule does not take.
    return circuit_of_edges(graph, np.flatnonzero(vector >= value))


def node_weighted(scores: torch.Tensor, graph: Graph, n: int) -> Circuit:
    """The paper's ``top_nodes_new``: weight |s_ij| by the total |score| out of source i and into
    destination j, then keep the ``n`` largest (all valid edges only)."""
    vector = _edge_vector(scores, graph)
    edges = select_edges(vector, top_n=n, node_weights=_edge_endpoints(graph))
    return circuit_of_edges(graph, edges)


def random_circuit(graph: Graph, n: int, *, seed: int = 0) -> Circuit:
    """``n`` valid edges drawn uniformly without replacement, reproducibly from ``seed``."""
    noise = torch.rand(graph.valid_mask.shape, generator=torch.Generator().manual_seed(seed))
    return top_n(noise.double(), graph, n)


def _node_table(names: tuple[str, ...], n_layers: int) -> dict[str, torch.Tensor]:
    """Per-node kind codes, layers and heads as tensors (one pass over the names)."""
    codes = {"input": 0, "head": 1, "mlp": 2, "logits": 3, "q": 4, "k": 5, "v": 6}
    refs = [parse_node(name, n_layers) for name in names]
    return {
        "kind": torch.tensor([codes[ref.qkv or ref.kind] for ref in refs]),
        "layer": torch.tensor([ref.layer for ref in refs]),
        "head": torch.tensor([-1 if ref.head is None else ref.head for ref in refs]),
        "group": torch.tensor([-1 if ref.group is None else ref.group for ref in refs]),
    }


def _feeds(graph: Graph) -> torch.Tensor:
    """``[n_dst, n_src]``: destination j's input reaches source i's output inside one node (a
    head's q input its own output; a k/v group every head of the group; m{L}'s input its output,
    and an MLP group's input that group's output only)."""
    src = _node_table(graph.src_names, graph.n_layers)
    dst = _node_table(graph.dst_names, graph.n_layers)
    group_size = graph.n_heads // graph.n_kv_heads
    same_layer = dst["layer"][:, None] == src["layer"][None, :]
    src_head, dst_head = src["head"][None, :], dst["head"][:, None]
    src_is_head = src["kind"][None, :] == 1
    mlp = (
        (dst["kind"][:, None] == 2)
        & (src["kind"][None, :] == 2)
        & (dst["group"][:, None] == src["group"][None, :])
    )
    query = (dst["kind"][:, None] == 4) & src_is_head & (src_head == dst_head)
    key_value = (dst["kind"][:, None] >= 5) & src_is_head & (src_head // group_size == dst_head)
    return same_layer & (mlp | query | key_value)


def prune_dead_ends(circuit: Circuit, *, from_input: bool = True) -> Circuit:
    """Drop every edge that lies on no ``input -> ... -> logits`` path of the circuit (with
    ``from_input`` off: every edge that reaches no ``logits`` through the circuit, whatever feeds
    it; right when only the target position is ablated, since the other positions then feed each
    node's keys and values intact, so a node needs no input edge to carry the task).

    Reachability runs as a fixed point over whole node vectors (at most 2 * n_layers + 2 rounds).
    With the paper's graph (no ``input`` or ``logits`` node) the embeddings feed every node and every
    node writes to the unembedding through paths that are never ablated, so no edge is a dead end
    and the circuit comes back unchanged.
    """
    graph, edges = circuit.graph, circuit.edge_mask
    if graph.paper:
        return circuit
    feeds = _feeds(graph)
    is_input = torch.tensor([parse_node(n).kind == "input" for n in graph.src_names])
    if not from_input:
        is_input = torch.ones_like(is_input)  # every source counts as fed
    is_logits = torch.tensor([parse_node(n).kind == "logits" for n in graph.dst_names])
    from_input = is_input
    to_logits = is_logits
    for _ in range(2 * graph.n_layers + 2):
        reached_dst = (edges & from_input[:, None]).any(0)
        next_from = is_input | (feeds & reached_dst[:, None]).any(0)
        reaching_src = (edges & to_logits[None, :]).any(1)
        next_to = is_logits | (feeds & reaching_src[None, :]).any(1)
        if torch.equal(next_from, from_input) and torch.equal(next_to, to_logits):
            break
        from_input, to_logits = next_from, next_to
    return Circuit.from_edge_mask(graph, edges & from_input[:, None] & to_logits[None, :])
