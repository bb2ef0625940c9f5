"""Reading and writing scored graphs and circuits.

Two formats, both round-trip exactly (scores as float32):

* JSON in the EAP-IG / MIB layout, readable by their tools::

      {"cfg": {"n_layers": .., "n_heads": .., "n_kv_heads": .., "d_model": .., "paper_graph": ..},
       "nodes": {"input": {"in_graph": true}, "a0.h1": {"in_graph": false}, ...},
       "edges": {"a0.h1->a1.h2<q>": {"score": -0.013, "in_graph": true}, ...},
       "metadata": {"model": .., "task": .., "method": .., "sign": .., ...}}

  ``nodes`` holds base node names as EAP-IG's ``Graph.from_json`` reads them (files of earlier
  circuitviz versions wrote ``{name: true}``, which still loads); ``edges`` every valid edge in the
  graph's canonical order. ``cfg`` carries what the reference needs (``n_layers``, ``n_heads``,
  ``parallel_attn_mlp``, ``d_model``) plus circuitviz's own keys. Under grouped-query attention
  (``n_kv_heads < n_heads``) and with MLP groups the graph is circuitviz's own, which the
  reference cannot represent.
* safetensors (``.safetensors``): ``scores`` ``[n_src, n_dst]`` float32 and ``in_graph``
  ``[n_src, n_dst]`` bool, with ``cfg`` and ``metadata`` as JSON in the header.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from circuitviz.graph.select import Circuit
from circuitviz.graph.topology import Graph, build_graph, parse_edge

JSON_SUFFIXES = (".json",)
TENSOR_SUFFIXES = (".safetensors",)


@dataclass(frozen=True, kw_only=True)
class ScoredGraph:
    """What a graph file holds: the graph, its edge scores, a circuit (possibly empty) and
    free-form JSON metadata (model spec, task, method, sign convention, ...).

    >>> import torch
    >>> import circuitviz as cv
    >>> from circuitviz.graph.select import empty_circuit
    >>> graph = cv.graph_for(cv.load_model("demo"))
    >>> scored = cv.ScoredGraph(graph=graph, scores=torch.zeros(graph.n_src, graph.n_dst),
    ...                         circuit=empty_circuit(graph), metadata={"task": "mine"})
    >>> scored.circuit.n_edges, scored.metadata["task"]
    (0, 'mine')
    """

    graph: Graph = field(repr=False)
    scores: torch.Tensor = field(repr=False)  # [n_src, n_dst] float32, 0 on invalid cells
    circuit: Circuit = field(repr=False)
    metadata: dict = field(default_factory=dict)
    d_model: int | None = None

    def __post_init__(self) -> None:
        shape = (self.graph.n_src, self.graph.n_dst)
        if tuple(self.scores.shape) != shape:
            raise ValueError(f"ScoredGraph.scores must be {shape}, got {tuple(self.scores.shape)}")
        if self.scores.dtype != torch.float32 or self.scores.device.type != "cpu":
            raise ValueError(
                f"ScoredGraph.scores must be float32 on CPU, got {self.scores.dtype} on "
                f"{self.scores.device}"
            )
        other = self.circuit.graph
        if (other.src_names, other.dst_names) != (self.graph.src_names, self.graph.dst_names):
            raise ValueError("ScoredGraph.circuit belongs to a different graph")


def _cfg(scored: ScoredGraph) -> dict:
    graph = scored.graph
    cfg = {
        "n_layers": graph.n_layers,
        "n_heads": graph.n_heads,
        "n_kv_heads": graph.n_kv_heads,
        "paper_graph": graph.paper,
        "parallel_attn_mlp": False,
    }
    if graph.mlp_groups is not None:
        cfg["mlp_groups"] = graph.mlp_groups
    if scored.d_model is not None:
        cfg["d_model"] = scored.d_model
    return cfg


def _graph_from_cfg(cfg: dict, path: Path) -> Graph:
    try:
        n_layers, n_heads = int(cfg["n_layers"]), int(cfg["n_heads"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: 'cfg' needs integer n_layers and n_heads ({exc})") from exc
    return build_graph(
        n_layers,
        n_heads,
        int(cfg.get("n_kv_heads", n_heads)),
        paper=bool(cfg.get("paper_graph", False)),
        mlp_groups=None if cfg.get("mlp_groups") is None else int(cfg["mlp_groups"]),
    )


def save_json(path: str | Path, scored: ScoredGraph) -> Path:
    path = Path(path)
    graph = scored.graph
    scores = scored.scores[graph.valid_mask].tolist()
    in_graph = scored.circuit.edge_mask[graph.valid_mask].tolist()
    names = graph.edge_names()
    payload = {
        "cfg": _cfg(scored),
        "nodes": {name: {"in_graph": flag} for name, flag in scored.circuit.node_mask().items()},
        "edges": {
            name: {"score": score, "in_graph": flag}
            for name, score, flag in zip(names, scores, in_graph)
        },
        "metadata": scored.metadata,
    }
    path.write_text(json.dumps(payload, indent=1, allow_nan=True))
    return path


def load_json(path: str | Path) -> ScoredGraph:
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict) or "cfg" not in payload or "edges" not in payload:
        raise ValueError(f"{path}: expected an EAP-IG style graph with 'cfg' and 'edges' keys")
    cfg = payload["cfg"]
    if "paper_graph" not in cfg:  # an EAP-IG file: its graph always has input and logits nodes
        ends = any(n.startswith("input->") or n.endswith("->logits") for n in payload["edges"])
        cfg = {**cfg, "paper_graph": not ends and "input" not in payload.get("nodes", {})}
    graph = _graph_from_cfg(cfg, path)
    src_index, dst_index = graph.src_index(), graph.dst_index()
    scores = torch.zeros(graph.n_src, graph.n_dst, dtype=torch.float32)
    edge_mask = torch.zeros(graph.n_src, graph.n_dst, dtype=torch.bool)
    for name, entry in payload["edges"].items():
        src, dst = parse_edge(name)
        if (
            src not in src_index
            or dst not in dst_index
            or not graph.valid_mask[src_index[src], dst_index[dst]]
        ):
            raise ValueError(f"{path}: edge {name!r} is not an edge of the graph described in cfg")
        i, j = src_index[src], dst_index[dst]
        score = entry.get("score")
        scores[i, j] = math.nan if score is None else float(score)
        edge_mask[i, j] = bool(entry.get("in_graph", False))
    return ScoredGraph(
        graph=graph,
        scores=scores,
        circuit=Circuit.from_edge_mask(graph, edge_mask),
        metadata=payload.get("metadata", {}),
        d_model=cfg.get("d_model"),
    )


def save_tensors(path: str | Path, scored: ScoredGraph) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {
        "scores": scored.scores.contiguous(),
        "in_graph": scored.circuit.edge_mask.contiguous(),
    }
    header = {"cfg": json.dumps(_cfg(scored)), "metadata": json.dumps(scored.metadata)}
    save_file(tensors, str(path), metadata=header)
    return path


def load_tensors(path: str | Path) -> ScoredGraph:
    from safetensors import safe_open

    path = Path(path)
    with safe_open(str(path), framework="pt") as handle:
        header = handle.metadata() or {}
        if "cfg" not in header:
            raise ValueError(f"{path}: not a circuitviz graph file (no 'cfg' in the header)")
        cfg = json.loads(header["cfg"])
        scores = handle.get_tensor("scores")
        edge_mask = handle.get_tensor("in_graph")
    graph = _graph_from_cfg(cfg, path)
    return ScoredGraph(
        graph=graph,
        scores=scores,
        circuit=Circuit.from_edge_mask(graph, edge_mask),
        metadata=json.loads(header.get("metadata", "{}")),
        d_model=cfg.get("d_model"),
    )


def save_graph(path: str | Path, scored: ScoredGraph) -> Path:
    """Write ``scored`` as JSON or safetensors, chosen by the file suffix.

    >>> import tempfile, torch
    >>> import circuitviz as cv
    >>> graph = cv.graph_for(cv.load_model("demo"))
    >>> scores = (torch.randn(graph.n_src, graph.n_dst) * graph.valid_mask).float()
    >>> circuit = cv.select(scores, graph, cv.SelectionConfig(top_n=20))
    >>> path = tempfile.mkdtemp() + "/circuit.json"
    >>> _ = cv.save_graph(path, cv.ScoredGraph(graph=graph, scores=scores, circuit=circuit))
    >>> cv.load_graph(path).circuit.n_edges
    20
    """
    suffix = Path(path).suffix.lower()
    if suffix in JSON_SUFFIXES:
        return save_json(path, scored)
    if suffix in TENSOR_SUFFIXES:
        return save_tensors(path, scored)
    raise ValueError(
        f"unknown graph file type {suffix or '(none)'!r} for {path}: use .json (EAP-IG style) "
        "or .safetensors (compact)"
    )


def load_graph(path: str | Path) -> ScoredGraph:
    """Read a file written by ``save_graph`` (or an EAP-IG style JSON).

    >>> import json, tempfile
    >>> import circuitviz as cv
    >>> path = tempfile.mkdtemp() + "/eap_ig.json"
    >>> edges = {"input->a0.h0<q>": {"score": 0.5, "in_graph": True}}
    >>> _ = open(path, "w").write(json.dumps({"cfg": {"n_layers": 1, "n_heads": 2},
    ...                                       "nodes": {}, "edges": edges}))
    >>> cv.load_graph(path).circuit.edge_names()
    ['input->a0.h0<q>']
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"no such graph file: {path}")
    suffix = path.suffix.lower()
    if suffix in JSON_SUFFIXES:
        return load_json(path)
    if suffix in TENSOR_SUFFIXES:
        return load_tensors(path)
    raise ValueError(f"unknown graph file type {suffix!r} for {path}: use .json or .safetensors")
