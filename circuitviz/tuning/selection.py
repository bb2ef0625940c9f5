"""Adapter from the tuning config to circuit selection (top-N, threshold, node-weighted).

Temporary: ``circuitviz.graph.select`` (owned by the graph engineer) was not there when the tuning
loop was written, so this module selects by itself with the same rules; once ``select`` lands it
only forwards to it.
"""

from __future__ import annotations

import torch

from circuitviz.attribution.config import EdgeScores
from circuitviz.tuning.config import TuneConfig


def select_mask(scores: EdgeScores, n: int, config: TuneConfig) -> torch.Tensor:
    """Boolean ``[n_src, n_dst]`` of the selected valid edges, ranked by ``|score|``."""
    valid = scores.graph.valid_mask
    magnitude = scores.scores.abs().masked_fill(~valid, -1.0)
    if config.selection == "threshold":
        return (magnitude >= config.threshold) & valid
    if config.selection == "node_weighted":
        src_strength = magnitude.clamp_min(0).sum(dim=1, keepdim=True)
        dst_strength = magnitude.clamp_min(0).sum(dim=0, keepdim=True)
        magnitude = (magnitude * src_strength * dst_strength).masked_fill(~valid, -1.0)
    k = min(n, int(valid.sum()))
    top = magnitude.flatten().topk(k).indices
    mask = torch.zeros(magnitude.numel(), dtype=torch.bool)
    mask[top] = True
    return mask.view_as(valid)
