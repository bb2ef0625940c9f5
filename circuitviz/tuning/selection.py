"""From the tuning config to a circuit selection (``circuitviz.graph.select.select``), as an edge
mask."""

from __future__ import annotations

import torch

from circuitviz.attribution.scores import EdgeScores
from circuitviz.graph import select
from circuitviz.graph.selection import SelectionConfig
from circuitviz.tuning.config import TuneConfig


def selection_config(config: TuneConfig, n: int) -> SelectionConfig:
    """The selection rule of ``config`` at circuit size ``n`` (the TopN schedule's value)."""
    return SelectionConfig(rule=config.selection, top_n=n, threshold=config.threshold)


def select_mask(scores: EdgeScores, n: int, config: TuneConfig) -> torch.Tensor:
    """Boolean ``[n_src, n_dst]``: the valid edges ``config.selection`` keeps (|score| ranking)."""
    return select.select(scores.scores, scores.graph, selection_config(config, n)).edge_mask
