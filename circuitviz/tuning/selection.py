"""From the tuning config to a circuit selection (``circuitviz.graph.select``), as an edge mask."""

from __future__ import annotations

import torch

from circuitviz.attribution.config import EdgeScores
from circuitviz.graph import select
from circuitviz.tuning.config import TuneConfig


def select_mask(scores: EdgeScores, n: int, config: TuneConfig) -> torch.Tensor:
    """Boolean ``[n_src, n_dst]``: the valid edges ``config.selection`` keeps (|score| ranking)."""
    if config.selection == "threshold":
        circuit = select.threshold(scores.scores, scores.graph, config.threshold)
    elif config.selection == "node_weighted":
        circuit = select.node_weighted(scores.scores, scores.graph, n)
    else:
        circuit = select.top_n(scores.scores, scores.graph, n)
    return circuit.edge_mask
