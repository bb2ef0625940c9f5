"""Edge attribution (EAP, EAP-IG), exact edge patching (the oracle) and circuit faithfulness.

Public API (names load on first use; ``config`` imports no torch):
    AttributionConfig, SIGN_CONVENTION                       (config)
    EdgeScores, ScoredEdge                                   (scores)
    attribute(model, graph, batches, config) -> EdgeScores   (eap)
    batch_edge_scores(model, graph, batch, config, *, return_logits=False) -> BatchScores
    METHODS (the registry of attribution methods)
    source_means(model, graph, batches) -> SourceMeans
    FaithfulnessConfig, evaluate_circuits, faithfulness_sweep, circuit_and_random_faithfulness
    edge_effects, edge_derivatives (slow, for tests)
"""

from circuitviz._lazy import exports, lazy_namespace

__getattr__, __dir__, __all__ = lazy_namespace(
    __name__,
    exports(
        ("activations", ("SourceMeans", "source_means")),
        ("config", ("SIGN_CONVENTION", "AttributionConfig")),
        ("scores", ("EdgeScores", "ScoredEdge")),
        ("eap", ("METHODS", "BatchScores", "attribute", "batch_edge_scores")),
        (
            "faithfulness",
            (
                "DEFAULT_FRACTIONS",
                "CircuitMetrics",
                "FaithfulnessConfig",
                "SweepResult",
                "circuit_and_random_faithfulness",
                "evaluate_circuits",
                "faithfulness_sweep",
                "run_with_ablated_edges",
            ),
        ),
        ("patching", ("edge_derivatives", "edge_effects")),
    ),
)
