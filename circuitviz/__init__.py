"""circuitviz: find a task's circuit with EAP / EAP-IG, circuit-tune a model, watch the circuit change.

The library in a dozen names (they load on first use, so ``import circuitviz`` is instant)::

    import circuitviz as cv

    model = cv.load_model("demo")               # or cv.from_model(hf_model, tokenizer), a bridge
    graph = cv.graph_for(model)
    data = cv.task_data("sv-agreement", model, split="train", n=64)
    scores = cv.attribute(model, graph, data.batches(16), cv.AttributionConfig(method="eap-ig-inputs"))
    circuit = cv.select(scores.scores, graph, cv.SelectionConfig(top_n=100))
    held_out = cv.task_data("sv-agreement", model, split="dev", n=64)
    cv.faithfulness(model, graph, held_out.batches(16), circuit)

    found = cv.discover(model, "sv-agreement", cv.DiscoverConfig())   # all of the above at once
    cv.save_graph("circuit.json", ...)          # EAP-IG / MIB layout; cv.load_graph reads it back
    cv.to_networkx(cv.load_graph("circuit.json"))
    run = cv.open_run("sv-disagreement-circuit")  # a recorded circuit-tuning run

Every name has a docstring with a runnable example.
"""

from circuitviz._lazy import exports, lazy_namespace

__version__ = "0.2.0"

__getattr__, __dir__, __all__ = lazy_namespace(
    __name__,
    exports(
        ("models", ("load_model", "from_model")),
        ("api", ("graph_for", "task_data", "faithfulness", "open_run")),
        ("attribution.config", ("AttributionConfig", "DiscoverConfig")),
        ("attribution.eap", ("attribute",)),
        ("attribution.discover", ("discover",)),
        ("attribution.faithfulness", ("FaithfulnessConfig",)),
        ("graph.selection", ("SelectionConfig",)),
        ("graph.select", ("select",)),
        ("graph.io", ("load_graph", "save_graph", "ScoredGraph")),
        ("graph.digraph", ("to_networkx",)),
    ),
)
