"""Configuration and results of edge attribution, and the sign convention every score follows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from circuitviz.graph.sign import SIGN_CONVENTION  # noqa: F401  (re-exported)
from circuitviz.graph.topology import Graph, edge_name

Method = Literal["eap", "eap-ig-inputs", "eap-ig-activations"]
Baseline = Literal["corrupted", "mean", "zero"]
Positions = Literal["all", "target"]
MetricName = Literal["logit_diff", "logprob_diff", "answer_loss"]

METHOD_NAMES: tuple[str, ...] = ("eap", "eap-ig-inputs", "eap-ig-activations")
BASELINES: tuple[str, ...] = ("corrupted", "mean", "zero")
POSITIONS: tuple[str, ...] = ("all", "target")
METRIC_NAMES: tuple[str, ...] = ("logit_diff", "logprob_diff", "answer_loss")


def _check_choice(owner: str, name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{owner}.{name} must be one of {choices}, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class AttributionConfig:
    """How to score edges.

    ``method``: ``eap`` (gradient at the clean input), ``eap-ig-inputs`` (gradients averaged over
    ``ig_steps`` inputs interpolated between the baseline and the clean embeddings) or
    ``eap-ig-activations`` (every source activation interpolated between baseline and clean).
    ``baseline``: the value an ablated activation takes: the corrupted prompt's (``corrupted``), the
    mean over the data's real tokens (``mean``) or ``zero``. ``positions``: sum over every real token
    (``all``) or only the position the metric reads (``target``).
    """

    method: Method = "eap"
    baseline: Baseline = "corrupted"
    positions: Positions = "all"
    metric: MetricName = "logit_diff"
    ig_steps: int = 5

    def __post_init__(self) -> None:
        _check_choice("AttributionConfig", "method", self.method, METHOD_NAMES)
        _check_choice("AttributionConfig", "baseline", self.baseline, BASELINES)
        _check_choice("AttributionConfig", "positions", self.positions, POSITIONS)
        _check_choice("AttributionConfig", "metric", self.metric, METRIC_NAMES)
        if not isinstance(self.ig_steps, int) or self.ig_steps < 1:
            raise ValueError(
                f"AttributionConfig.ig_steps must be an int >= 1, got {self.ig_steps!r}"
            )

    @property
    def n_steps(self) -> int:
        """Forward/backward passes per batch: 1 for EAP, ``ig_steps`` for EAP-IG."""
        return 1 if self.method == "eap" else self.ig_steps

    def describe(self) -> dict:
        return {
            "method": self.method,
            "baseline": self.baseline,
            "positions": self.positions,
            "metric": self.metric,
            "ig_steps": self.n_steps,
            "sign": SIGN_CONVENTION,
        }


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
