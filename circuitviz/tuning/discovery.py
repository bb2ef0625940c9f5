"""Finding the subgraph a tuning step may update: a discovered circuit, a random one, or everything.

1. ``circuit``: score every edge on the step's batch with ``circuitviz.attribution.attribute`` (the
   same call ``discover`` makes, so the step-1 circuit is what discovery reports on that batch),
   then select N edges (``circuitviz.graph.select``, as ``discover`` does).
2. ``random``: N valid edges drawn uniformly, from a generator seeded by (seed, step).
3. The circuit's nodes are the endpoints of its edges; forced nodes (layer-0 q/k/v, the randomly
   activated extras) are added; the node mask bank turns them into trainable parameter slices.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from circuitviz.attribution import eap
from circuitviz.attribution.hooks import HOOK_FLAGS, hook_flags  # noqa: F401 (re-exported)
from circuitviz.attribution.scores import EdgeScores
from circuitviz.graph.topology import Graph
from circuitviz.tuning.config import TuneConfig
from circuitviz.tuning.masks import NodeMaskBank, tunable_nodes
from circuitviz.tuning.selection import select_mask


@dataclass(frozen=True, kw_only=True)
class StepCircuit:
    """The subgraph one step trains: its edges and its nodes (every one for full fine-tuning)."""

    nodes: torch.Tensor = field(repr=False)  # [n_nodes] bool, forced extras included
    edge_mask: torch.Tensor = field(repr=False)  # [n_src, n_dst] bool
    n_edges: int
    top_n: int | None


def score_edges(model, graph: Graph, batch, config: TuneConfig, means=None) -> EdgeScores:
    """Edge scores of ``batch`` under the run's attribution settings (mean over its examples).
    ``means``: the mean baseline's data mean (``SourceMeans``; default: the batch's own)."""
    with hook_flags(model.bridge, True):
        result = eap.batch_edge_scores(model, graph, batch, config.attribution, means=means)
    return eap.mean_edge_scores(result.scores, result.n_examples, graph, config.attribution)


def score_edges_on_training_text(
    model,
    graph: Graph,
    batch,
    ids: torch.Tensor,
    config: TuneConfig,
    means=None,
    shared: eap.SharedBackward | None = None,
) -> tuple[EdgeScores, torch.Tensor]:
    """``score_edges`` whose clean forward reads the step's training text ``ids`` (the prompt is
    its prefix, so the scores are the prompt's): the scores, and that forward's logits with their
    autograd graph through every parameter that requires grad, for the training loss. Saves the
    training step's own forward on every discovery step. With ``shared`` (``shared_backward``) the
    training objective is backpropagated here, its backward serving the attribution too, and the
    logits come back spent."""
    with hook_flags(model.bridge, True):
        result = eap.batch_edge_scores(
            model,
            graph,
            batch,
            config.attribution,
            forward_ids=(ids, batch.train_mask),
            return_logits=True,
            means=means,
            shared=shared,
        )
    scores = eap.mean_edge_scores(result.scores, result.n_examples, graph, config.attribution)
    return scores, result.logits


def shared_backward(
    batch, config: TuneConfig, objective, params: list[torch.Tensor]
) -> eap.SharedBackward | None:
    """The attribution's backward as the training step's (``eap.SharedBackward``) when one serves
    both: an instruction batch trained on its response loss and scored with the ``process``
    metric by plain EAP (its one gradient point is the clean pass), whose per-example gradients
    differ from the loss's by a known factor. None otherwise."""
    from circuitviz.tasks.sft import is_sft_batch
    from circuitviz.tasks.sft_metrics import process_scale

    attribution = config.attribution
    if not (
        is_sft_batch(batch) and attribution.metric == "process" and attribution.method == "eap"
    ):
        return None
    return eap.SharedBackward(objective=objective, row_scale=process_scale(batch), params=params)


def select_edges(scores: EdgeScores, n: int, config: TuneConfig) -> torch.Tensor:
    """Boolean ``[n_src, n_dst]``: the selected edges among ``scores`` (never an invalid edge)."""
    return select_mask(scores, n, config)


def random_edges(graph: Graph, n: int, *, seed: int, step: int) -> torch.Tensor:
    """Boolean ``[n_src, n_dst]``: ``n`` valid edges drawn uniformly (seeded by seed and step)."""
    from circuitviz.graph.select import random_circuit

    return random_circuit(graph, n, seed=seed * 1_000_003 + step).edge_mask


def random_extra_nodes(bank: NodeMaskBank, circuit_nodes: torch.Tensor, config: TuneConfig):
    """The paper's random activation: ``random_ratio`` of the tunable nodes outside the circuit,
    drawn once with ``random_seed``. Boolean ``[n_nodes]``."""
    extra = torch.zeros(bank.n_nodes, dtype=torch.bool)
    if config.random_ratio <= 0:
        return extra
    outside = (tunable_nodes(bank) & ~circuit_nodes).nonzero()[:, 0]
    k = round(config.random_ratio * len(outside))
    generator = torch.Generator().manual_seed(config.random_seed)
    extra[outside[torch.randperm(len(outside), generator=generator)[:k]]] = True
    return extra


def circuit_from_edges(
    edge_mask: torch.Tensor, bank: NodeMaskBank, forced: torch.Tensor, top_n: int | None
) -> StepCircuit:
    nodes = bank.nodes_of_edges(edge_mask) | forced
    return StepCircuit(nodes=nodes, edge_mask=edge_mask, n_edges=int(edge_mask.sum()), top_n=top_n)
