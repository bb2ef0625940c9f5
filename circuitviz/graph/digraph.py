"""Circuits as networkx directed graphs, and as GraphML / GEXF files for Gephi and Cytoscape.

The DiGraph keeps the computational graph's own structure, so that path questions have their
usual networkx answers (``nx.has_path(g, "input", "logits")``):

* one node per source and destination of the graph: ``input``, ``a{L}.h{H}`` (a head's output),
  ``m{L}`` (an MLP, both its input and output), the readers ``a{L}.h{H}<q>``, ``<k>``, ``<v>`` of a
  head (k/v per key/value group under grouped-query attention), and ``logits``;
* one edge per kept edge of the circuit, ``src -> dst`` with ``score`` and ``kind="residual"``;
* one ``kind="internal"`` edge from each reader to the head(s) it feeds (a k/v group feeds every
  query head of its group), carrying no score: the path through a head's own computation.

Node attributes: ``kind`` (input, head, mlp, reader, logits), ``layer``, ``head`` (-1 if none),
``qkv`` ("" if none) and ``in_circuit``. Edge attributes: ``score``, ``abs_score``, ``rank`` (1 =
strongest of all edges), ``kind``. GraphML and GEXF cannot store None, so absent values are -1/"".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from circuitviz.graph.names import parse_edge, parse_node
from circuitviz.graph.selection import edge_ranking, rank_order

FORMATS = {".graphml": "graphml", ".gexf": "gexf"}


def to_networkx(scored, *, only_circuit: bool = True):
    """A ``networkx.DiGraph`` of ``scored`` (a ``graph.io.ScoredGraph``): its circuit's edges, or
    every valid edge with ``only_circuit=False`` (each with ``in_circuit`` set).

    >>> import networkx as nx, torch
    >>> import circuitviz as cv
    >>> graph = cv.graph_for(cv.load_model("demo"))
    >>> scores = (torch.randn(graph.n_src, graph.n_dst) * graph.valid_mask).float()
    >>> full = cv.select(scores, graph, cv.SelectionConfig(top_n=graph.n_edges))
    >>> network = cv.to_networkx(cv.ScoredGraph(graph=graph, scores=scores, circuit=full))
    >>> nx.has_path(network, "input", "logits"), network.number_of_nodes()
    (True, 134)
    """
    graph = scored.graph
    return build_network(
        graph.edge_names(),
        scored.scores[graph.valid_mask].double().numpy(),
        scored.circuit.edge_mask[graph.valid_mask].numpy(),
        shape=(graph.n_layers, graph.n_heads, graph.n_kv_heads, graph.paper),
        metadata=scored.metadata,
        only_circuit=only_circuit,
    )


def build_network(
    edge_names,
    scores: np.ndarray,
    in_circuit: np.ndarray,
    *,
    shape: tuple[int, int, int, bool],
    metadata: dict | None = None,
    only_circuit: bool = True,
):
    """The DiGraph from per-edge vectors in canonical edge order (no torch: the dashboard's export
    calls this with a view's scores and shown edges). ``shape`` is (n_layers, n_heads, n_kv_heads,
    paper_graph)."""
    import networkx as nx

    n_layers, n_heads, n_kv_heads, paper = shape
    scores = np.asarray(scores, dtype=np.float64)
    in_circuit = np.asarray(in_circuit, dtype=bool)
    ranks = np.empty(len(scores), dtype=np.int64)
    ranks[rank_order(edge_ranking(scores))] = np.arange(1, len(scores) + 1)
    keep = np.flatnonzero(in_circuit) if only_circuit else np.arange(len(scores))
    attributes = {k: v for k, v in (metadata or {}).items() if _plain(v)}
    attributes |= {
        "n_layers": n_layers,
        "n_heads": n_heads,
        "n_kv_heads": n_kv_heads,
        "paper_graph": bool(paper),
    }
    out = nx.DiGraph(**attributes)
    touched: set[str] = set()
    for e in keep.tolist():
        src, dst = parse_edge(edge_names[e])
        out.add_edge(
            src,
            dst,
            score=float(scores[e]),
            abs_score=abs(float(scores[e])),
            rank=int(ranks[e]),
            kind="residual",
            in_circuit=bool(in_circuit[e]),
        )
        if in_circuit[e]:
            touched.update(parse_node(name, n_layers).base for name in (src, dst))
    for name in list(out.nodes):
        out.nodes[name].update(_node_attributes(name, n_layers))
    _add_internal_edges(out, n_layers, n_heads // n_kv_heads)
    for name in out.nodes:
        out.nodes[name]["in_circuit"] = parse_node(name, n_layers).base in touched
    return out


def _plain(value) -> bool:
    return isinstance(value, str | int | float | bool)


def _node_attributes(name: str, n_layers: int) -> dict:
    ref = parse_node(name, n_layers)
    kind = "reader" if ref.qkv else ref.kind
    return {
        "kind": kind,
        "layer": ref.layer,
        "head": -1 if ref.head is None else ref.head,
        "qkv": ref.qkv or "",
    }


def _add_internal_edges(out, n_layers: int, group: int) -> None:
    """Reader -> head edges for the readers present (a k/v group feeds its group's heads)."""
    for name in list(out.nodes):
        ref = parse_node(name, n_layers)
        if ref.qkv is None:
            continue
        heads = [ref.head] if ref.qkv == "q" else range(ref.head * group, (ref.head + 1) * group)
        for head in heads:
            target = f"a{ref.layer}.h{head}"
            if target not in out:
                out.add_node(target, **_node_attributes(target, n_layers))
            out.add_edge(name, target, kind="internal", score=0.0, abs_score=0.0, rank=-1)


def network_bytes(network, fmt: str) -> bytes:
    """The network as a GraphML or GEXF file's bytes (``fmt``: ``graphml`` or ``gexf``)."""
    import io

    import networkx as nx

    if fmt not in FORMATS.values():
        raise ValueError(f"network format must be graphml or gexf, got {fmt!r}")
    buffer = io.BytesIO()
    (nx.write_graphml if fmt == "graphml" else nx.write_gexf)(network, buffer)
    return buffer.getvalue()


def save_network(path: str | Path, scored, *, only_circuit: bool = True) -> Path:
    """Write the circuit as GraphML or GEXF, chosen by the suffix (``.graphml``, ``.gexf``)."""
    path = Path(path)
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise ValueError(f"{path}: use a .graphml or .gexf file for a network export")
    path.write_bytes(network_bytes(to_networkx(scored, only_circuit=only_circuit), kind))
    return path
