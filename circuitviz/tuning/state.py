"""What a checkpoint must hold, besides the tensors, for ``tune --resume`` to continue exactly.

``ResumeState`` is written next to each checkpoint's tensors (``runs.checkpoints``: read back with
``torch.load(weights_only=True)``, so it holds only numbers, lists and one tensor) and read back
into the same typed form; a state from another version or another kind of run is an error naming
what is missing, never a silently different run.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch


@dataclass(frozen=True, kw_only=True)
class StoredCircuit:
    """A step's circuit as indices: nodes into the mask bank, edges into the flat
    ``[n_src * n_dst]`` edge matrix."""

    nodes: tuple[int, ...]
    edges: tuple[int, ...]
    top_n: int | None

    @classmethod
    def of(cls, nodes: torch.Tensor, edge_mask: torch.Tensor, top_n: int | None) -> StoredCircuit:
        return cls(nodes=indices_of(nodes), edges=indices_of(edge_mask.flatten()), top_n=top_n)

    def node_mask(self, n_nodes: int) -> torch.Tensor:
        return mask_of(self.nodes, n_nodes)

    def edge_mask(self, n_src: int, n_dst: int) -> torch.Tensor:
        return mask_of(self.edges, n_src * n_dst).view(n_src, n_dst)


@dataclass(frozen=True, kw_only=True)
class ResumeState:
    """Everything of the loop's state that is not a tensor of the model or the optimizer.

    step: the last optimizer step the checkpoint includes.
    optimizer: the optimizer's non-tensor state (``MaskedOptimizer.state_tensors``).
    circuit: the circuit in force after ``step`` (None for full fine-tuning, which trains all).
    extra_nodes: the nodes the paper's random activation added (drawn once, at step 1).
    torch_rng: the CPU generator's state, so dropout-free training and random draws continue.
    seconds: wall time the run had spent up to ``step``, over every segment so far (a resumed
        run's ``summary.seconds`` adds its own segment to this).
    touched: the tensors any optimizer step has updated so far: all that can differ from the
        untouched model, so all that a slimmed checkpoint keeps.
    """

    step: int
    optimizer: dict
    circuit: StoredCircuit | None
    extra_nodes: tuple[int, ...] | None
    torch_rng: torch.Tensor = field(repr=False)
    seconds: float = 0.0
    touched: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        circuit = self.circuit
        return {
            "step": self.step,
            "optimizer": self.optimizer,
            "circuit_nodes": [] if circuit is None else list(circuit.nodes),
            "circuit_edges": [] if circuit is None else list(circuit.edges),
            "circuit_top_n": None if circuit is None else circuit.top_n,
            "extra_nodes": None if self.extra_nodes is None else list(self.extra_nodes),
            "torch_rng": self.torch_rng,
            "seconds": self.seconds,
            "touched": list(self.touched),
        }

    @classmethod
    def from_dict(cls, stored: dict) -> ResumeState:
        keys = {f.name for f in fields(cls)} - {"circuit", "seconds", "touched"}
        keys |= {"circuit_nodes", "circuit_edges", "circuit_top_n"}
        missing = sorted(keys - set(stored))
        if stored.get("slim"):
            raise ValueError(
                f"the checkpoint of step {stored.get('step')} was slimmed to the tensors that "
                "changed (no optimizer state), so it cannot be resumed from; the newest two "
                "checkpoints of a run keep everything"
            )
        if missing:
            raise ValueError(
                f"the checkpoint's resume state lacks {missing}; it was not written by this "
                "version's tuning loop, so the run cannot be resumed exactly"
            )
        circuit = None
        if stored["circuit_nodes"]:
            circuit = StoredCircuit(
                nodes=tuple(stored["circuit_nodes"]),
                edges=tuple(stored["circuit_edges"]),
                top_n=stored["circuit_top_n"],
            )
        extra = stored["extra_nodes"]
        return cls(
            step=int(stored["step"]),
            optimizer=stored["optimizer"],
            circuit=circuit,
            extra_nodes=None if extra is None else tuple(extra),
            torch_rng=stored["torch_rng"],
            seconds=float(stored.get("seconds", 0.0)),  # absent in runs of earlier versions
            touched=tuple(stored.get("touched", ())),
        )


def indices_of(mask: torch.Tensor) -> tuple[int, ...]:
    """Positions of the True entries of a 1-D boolean mask."""
    return tuple(mask.nonzero()[:, 0].tolist())


def mask_of(indices, n: int) -> torch.Tensor:
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.tensor(list(indices), dtype=torch.long)] = True
    return mask
