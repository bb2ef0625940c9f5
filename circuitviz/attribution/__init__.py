"""Edge attribution (EAP, EAP-IG), exact edge patching (the oracle) and circuit faithfulness.

Public API:
    AttributionConfig, EdgeScores, ScoredEdge, SIGN_CONVENTION, METHODS
    attribute(model, graph, batches, config) -> EdgeScores
    batch_edge_scores(model, graph, batch, config, *, return_logits=False) -> BatchScores
    source_means(model, graph, batches) -> SourceMeans
    FaithfulnessConfig, evaluate_circuits, faithfulness_sweep, circuit_and_random_faithfulness
    edge_effects, edge_derivatives (slow, for tests)
"""

from circuitviz.attribution.activations import SourceMeans, source_means
from circuitviz.attribution.config import (
    SIGN_CONVENTION,
    AttributionConfig,
    EdgeScores,
    ScoredEdge,
)
from circuitviz.attribution.eap import METHODS, BatchScores, attribute, batch_edge_scores
from circuitviz.attribution.faithfulness import (
    DEFAULT_FRACTIONS,
    CircuitMetrics,
    FaithfulnessConfig,
    SweepResult,
    circuit_and_random_faithfulness,
    evaluate_circuits,
    faithfulness_sweep,
    run_with_ablated_edges,
)
from circuitviz.attribution.patching import edge_derivatives, edge_effects

__all__ = [
    "DEFAULT_FRACTIONS",
    "METHODS",
    "SIGN_CONVENTION",
    "AttributionConfig",
    "BatchScores",
    "CircuitMetrics",
    "EdgeScores",
    "FaithfulnessConfig",
    "ScoredEdge",
    "SourceMeans",
    "SweepResult",
    "attribute",
    "batch_edge_scores",
    "circuit_and_random_faithfulness",
    "edge_derivatives",
    "edge_effects",
    "evaluate_circuits",
    "faithfulness_sweep",
    "run_with_ablated_edges",
    "source_means",
]
