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

from circuitviz.graph.names import parse_node
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
    import networkx as nx

    graph = scored.graph
    pairs = graph.edge_index().numpy()
    scores = scored.scores[graph.valid_mask].double().numpy()
    in_circuit = scored.circuit.edge_mask[graph.valid_mask].numpy()
    ranks = np.empty(len(scores), dtype=np.int64)
    ranks[rank_order(edge_ranking(scores))] = np.arange(1, len(scores) + 1)
    keep = np.flatnonzero(in_circuit) if only_circuit else np.arange(len(scores))
    attributes = {key: value for key, value in scored.metadata.items() if _plain(value)}
    attributes |= {
        "n_layers": graph.n_layers,
        "n_heads": graph.n_heads,
        "n_kv_heads": graph.n_kv_heads,
        "paper_graph": graph.paper,
    }
    out = nx.DiGraph(**attributes)
    used: set[str] = set()
    for e in keep.tolist():
        src, dst = graph.src_names[pairs[e, 0]], graph.dst_names[pairs[e, 1]]
        out.add_edge(
            src,
            dst,
            score=float(scores[e]),
            abs_score=abs(float(scores[e])),
            rank=int(ranks[e]),
            kind="residual",
            in_circuit=bool(in_circuit[e]),
        )
        used.update((src, dst))
    for name in list(used):
        out.nodes[name].update(_node_attributes(name, graph.n_layers))
    _add_internal_edges(out, graph, used)
    node_mask = scored.circuit.node_mask()
    for name in out.nodes:
        out.nodes[name]["in_circuit"] = node_mask.get(parse_node(name, graph.n_layers).base, False)
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


def _add_internal_edges(out, graph, readers: set[str]) -> None:
    """Reader -> head edges for the readers present (a k/v group feeds its group's heads)."""
    group = graph.n_heads // graph.n_kv_heads
    for name in readers:
        ref = parse_node(name, graph.n_layers)
        if ref.qkv is None:
            continue
        heads = [ref.head] if ref.qkv == "q" else range(ref.head * group, (ref.head + 1) * group)
        for head in heads:
            target = f"a{ref.layer}.h{head}"
            if target not in out:
                out.add_node(target, **_node_attributes(target, graph.n_layers))
            out.add_edge(name, target, kind="internal", score=0.0, abs_score=0.0, rank=-1)


def save_network(path: str | Path, scored, *, only_circuit: bool = True) -> Path:
    """Write the circuit as GraphML or GEXF, chosen by the suffix (``.graphml``, ``.gexf``)."""
    import networkx as nx

    path = Path(path)
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise ValueError(f"{path}: use a .graphml or .gexf file for a network export")
    network = to_networkx(scored, only_circuit=only_circuit)
    if kind == "graphml":
        nx.write_graphml(network, path)
    else:
        nx.write_gexf(network, path)
    return path
