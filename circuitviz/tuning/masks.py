"""Which parameter entries a set of graph nodes may update, computed without Python loops per step.

The parameter map (``circuitviz.models.params``) says which slices of which tensors each node owns.
Every owned slice is a block of whole rows (or columns) of one tensor, or the whole tensor, so a
trainable set is fully described per tensor by a boolean vector over that tensor's slicing axis.
The slice boundaries cut each tensor into *units* (a head's ``d_head`` rows; a whole MLP tensor is
one unit). ``NodeMaskBank`` precomputes, once per run, a matrix ``owner[n_nodes, n_units]`` over the
units of every tunable tensor laid end to end (about 600 x 1,100 for GPT-2 small); a node selection
then becomes every tensor's unit mask through one matrix product, and the parameter counts through
two reductions.

Node indices: the graph's distinct node names, sources first then destinations not already seen
(``m{L}`` is both a source and a destination but one node, owning its MLP once).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from circuitviz.graph.topology import Graph, parse_node
from circuitviz.models.params import ParamMap, count_unique_params
from circuitviz.models.shards import storage_key


@dataclass(frozen=True)
class RowMask:
    """Trainable units of one tensor: ``keep[i]`` for index ``i`` along ``dim``."""

    dim: int
    keep: torch.Tensor  # [size along dim] bool

    def full(self, shape: torch.Size) -> torch.Tensor:
        """The same mask at the tensor's full shape (for tests and for readers that want it)."""
        view = [1] * len(shape)
        view[self.dim] = shape[self.dim]
        return self.keep.view(view).expand(shape)


# A trainable set: tensor name -> None (the whole tensor) or a RowMask. Absent names are frozen.
Masks = dict[str, "RowMask | None"]


@dataclass(frozen=True)
class NodeMaskBank:
    """Per-node ownership of parameter units, precomputed for fast union and counting."""

    node_names: tuple[str, ...]
    src_to_node: torch.Tensor = field(repr=False)  # [n_src] long
    dst_to_node: torch.Tensor = field(repr=False)  # [n_dst] long
    param_names: tuple[str, ...] = ()
    param_dims: tuple[int, ...] = ()  # slicing axis of each tensor (0 for whole-owned tensors)
    unit_offsets: tuple[int, ...] = ()  # first unit of each tensor, plus one end offset
    owner: torch.Tensor = field(default=None, repr=False)  # [n_nodes, n_units] float 0/1
    unit_param: torch.Tensor = field(default=None, repr=False)  # [n_units] long
    unit_numel: torch.Tensor = field(default=None, repr=False)  # [n_units] long: entries per unit
    unit_rows: torch.Tensor = field(default=None, repr=False)  # [n_units] long: rows per unit
    param_numel: torch.Tensor = field(default=None, repr=False)  # [n_params] long
    n_model_params: int = 0

    @property
    def n_nodes(self) -> int:
        return len(self.node_names)

    def node_index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.node_names)}

    def nodes_of(self, names) -> torch.Tensor:
        """Boolean ``[n_nodes]`` selecting ``names``."""
        index = self.node_index()
        selected = torch.zeros(self.n_nodes, dtype=torch.bool)
        for name in names:
            if name not in index:
                raise KeyError(f"node {name!r} is not in this model's graph")
            selected[index[name]] = True
        return selected

    def nodes_of_edges(self, edge_mask: torch.Tensor) -> torch.Tensor:
        """Boolean ``[n_nodes]``: every endpoint of a selected edge (``edge_mask [n_src, n_dst]``)."""
        selected = torch.zeros(self.n_nodes, dtype=torch.bool)
        edge_mask = edge_mask.to("cpu")
        selected[self.src_to_node[edge_mask.any(dim=1)]] = True
        selected[self.dst_to_node[edge_mask.any(dim=0)]] = True
        return selected

    def units(self, nodes: torch.Tensor) -> torch.Tensor:
        """Boolean ``[n_units]``: units owned by any selected node."""
        return (nodes.to(self.owner.dtype) @ self.owner) > 0

    def masks(self, nodes: torch.Tensor, device: torch.device | None = None) -> Masks:
        """The trainable set of ``nodes`` (boolean ``[n_nodes]``)."""
        units = self.units(nodes)
        out: Masks = {}
        bounds = self.unit_offsets
        for i, name in enumerate(self.param_names):
            keep = units[bounds[i] : bounds[i + 1]]
            if bool(keep.all()):
                out[name] = None
            elif bool(keep.any()):
                rows = keep.repeat_interleave(self.unit_rows[bounds[i] : bounds[i + 1]])
                out[name] = RowMask(self.param_dims[i], rows.to(device) if device else rows)
        return out

    def count(self, nodes: torch.Tensor) -> dict[str, int]:
        """``whole``: entries of every touched tensor; ``exact``: entries the nodes own (as
        ``ParamMap.count``)."""
        units = self.units(nodes)
        exact = int((units.long() * self.unit_numel).sum())
        touched = torch.zeros(len(self.param_names), dtype=torch.long)
        touched.index_add_(0, self.unit_param, units.long())
        whole = int(self.param_numel[touched > 0].sum())
        return {"whole": whole, "exact": exact}


def build_mask_bank(pmap: ParamMap, graph: Graph) -> NodeMaskBank:
    """Precompute node ownership for ``graph`` from the parameter map."""
    names: dict[str, int] = {}
    for name in graph.src_names + graph.dst_names:
        names.setdefault(name, len(names))
    src_to_node = torch.tensor([names[n] for n in graph.src_names], dtype=torch.long)
    dst_to_node = torch.tensor([names[n] for n in graph.dst_names], dtype=torch.long)

    dims: dict[str, int] = {}
    cuts: dict[str, set[int]] = {}  # unit boundaries of each tensor along its slicing axis
    for node in names:
        for piece in pmap.owned.get(node, ()):
            if piece.dim is not None:
                if dims.get(piece.name, piece.dim) != piece.dim:
                    raise ValueError(f"{piece.name} is sliced along two axes by the parameter map")
                dims[piece.name] = piece.dim
                cuts.setdefault(piece.name, set()).update((piece.start, piece.stop))
            else:
                dims.setdefault(piece.name, -1)
    param_names = tuple(dims)
    param_dims = tuple(max(dims[n], 0) for n in param_names)
    unit_rows: list[int] = []  # rows (along the slicing axis) of every unit
    unit_param_list: list[int] = []
    unit_start: dict[tuple[str, int], int] = {}  # (tensor, first row) -> unit index
    offsets = [0]
    for i, name in enumerate(param_names):
        size = pmap.params[name].shape[param_dims[i]] if pmap.params[name].ndim else 1
        bounds = sorted(cuts.get(name, set()) | {0, size})
        for start, stop in zip(bounds[:-1], bounds[1:]):
            unit_start[(name, start)] = len(unit_rows)
            unit_rows.append(stop - start)
            unit_param_list.append(i)
        offsets.append(len(unit_rows))

    owner = torch.zeros(len(names), len(unit_rows))
    for node, idx in names.items():
        for piece in pmap.owned.get(node, ()):
            i = param_names.index(piece.name)
            if piece.dim is None:
                owner[idx, offsets[i] : offsets[i + 1]] = 1
            else:
                first = unit_start[(piece.name, piece.start)]
                last = unit_start.get((piece.name, piece.stop), offsets[i + 1])
                owner[idx, first:last] = 1

    numel = torch.tensor([pmap.params[n].numel() for n in param_names], dtype=torch.long)
    unit_param = torch.tensor(unit_param_list, dtype=torch.long)
    rows = torch.tensor(unit_rows, dtype=torch.long)
    sizes = torch.tensor(
        [
            pmap.params[n].shape[d] if pmap.params[n].ndim else 1
            for n, d in zip(param_names, param_dims)
        ]
    )
    unit_numel = numel[unit_param] // sizes[unit_param] * rows
    return NodeMaskBank(
        node_names=tuple(names),
        src_to_node=src_to_node,
        dst_to_node=dst_to_node,
        param_names=param_names,
        param_dims=param_dims,
        unit_offsets=tuple(offsets),
        owner=owner,
        unit_param=unit_param,
        unit_numel=unit_numel,
        unit_rows=rows,
        param_numel=numel,
        n_model_params=count_unique_params(pmap.params.values()),
    )


def layer0_qkv_nodes(bank: NodeMaskBank) -> torch.Tensor:
    """Boolean ``[n_nodes]``: every q/k/v reader of layer 0 (the paper's ``--use_layer0_qkv``)."""
    keep = [
        ref.layer == 0 and ref.qkv is not None
        for ref in (parse_node(name) for name in bank.node_names)
    ]
    return torch.tensor(keep, dtype=torch.bool)


def tunable_nodes(bank: NodeMaskBank) -> torch.Tensor:
    """Boolean ``[n_nodes]``: nodes that own any parameter (not ``input`` or ``logits``)."""
    return bank.owner.sum(dim=1) > 0


def full_finetune_params(pmap: ParamMap) -> list[str]:
    """Every parameter plain fine-tuning updates: all of them, except a fused tensor whose parts
    the model exposes as separate views (GPT-2's ``attn.qkv`` under the bridge): gradients land in
    the views, and optimising both would update the same storage twice."""
    owned = {piece.name for pieces in pmap.owned.values() for piece in pieces}
    by_storage: dict[int, list[str]] = {}
    for name, param in pmap.params.items():
        by_storage.setdefault(storage_key(param)[0], []).append(name)
    keep: list[str] = []
    for group in by_storage.values():
        if len(group) == 1:
            keep.extend(group)
        else:
            views = [name for name in group if name in owned]
            keep.extend(views or group[:1])
    return sorted(keep, key=list(pmap.params).index)
