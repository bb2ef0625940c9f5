"""Edge scores: the result of an attribution, as a dense matrix over the graph's sources and
destinations, with read-only views of single edges."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from circuitviz.attribution.config import AttributionConfig
from circuitviz.graph.topology import Graph, edge_name


@dataclass(frozen=True)
class ScoredEdge:
    """One edge of an ``EdgeScores``, a read-only view of one cell of its score matrix."""

    name: str
    src: str
    dst: str
    score: float


@dataclass(frozen=True, kw_only=True)
class EdgeScores:
    """Edge scores of one model on some data: ``scores[i, j]`` scores source ``graph.src_names[i]``
    -> destination ``graph.dst_names[j]`` (float32, CPU, exactly 0 where ``graph.valid_mask`` is
    False). ``n_examples`` is how many examples the mean ran over. See ``SIGN_CONVENTION``."""

    scores: torch.Tensor = field(repr=False)
    graph: Graph = field(repr=False)
    config: AttributionConfig
    n_examples: int

    def __post_init__(self) -> None:
        expected = (self.graph.n_src, self.graph.n_dst)
        if tuple(self.scores.shape) != expected:
            raise ValueError(
                f"EdgeScores.scores must be {expected}, got {tuple(self.scores.shape)}"
            )
        if self.scores.dtype != torch.float32 or self.scores.device.type != "cpu":
            raise ValueError(
                f"EdgeScores.scores must be float32 on CPU, got {self.scores.dtype} on "
                f"{self.scores.device}"
            )
        if self.n_examples < 1:
            raise ValueError(f"EdgeScores.n_examples must be >= 1, got {self.n_examples}")

    def edge_vector(self) -> torch.Tensor:
        """``[n_edges]`` scores of the valid edges, in the graph's canonical edge order."""
        return self.scores[self.graph.valid_mask]

    def ranked(self, k: int | None = None) -> list[ScoredEdge]:
        """The ``k`` edges with the largest |score| (all valid edges when ``k`` is None)."""
        magnitude = self.scores.abs().masked_fill(~self.graph.valid_mask, -1.0).flatten()
        k = self.graph.n_edges if k is None else min(k, self.graph.n_edges)
        top = magnitude.topk(k).indices
        src_idx, dst_idx = top // self.graph.n_dst, top % self.graph.n_dst
        values = self.scores.flatten()[top]
        return [
            ScoredEdge(
                edge_name(self.graph.src_names[i], self.graph.dst_names[j]),
                self.graph.src_names[i],
                self.graph.dst_names[j],
                float(v),
            )
            for i, j, v in zip(src_idx.tolist(), dst_idx.tolist(), values.tolist())
        ]
